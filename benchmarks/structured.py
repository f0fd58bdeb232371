"""Structured output against `mlxspec serve --demo` (SmolLM2-135M-Instruct and its shipped
feature draft), through the real `openai` client: 20 requests, each with a JSON schema
(`response_format` json_schema, strict), greedy, once speculating (the server's default) and
once without the draft (`num_draft_tokens: 0`), one at a time. For each: whether the answer
parses and validates against its schema (the `jsonschema` package, an oracle independent of
the library that enforced it), whether the two answers are equal token for token, tokens
and seconds. Output: benchmarks/results/structured/report.{json,md}.

    LD_PRELOAD=... .venv/bin/python benchmarks/structured.py [--max-tokens 256]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from common import RESULTS
from serve import free_port, start

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 40},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 130},
                                           "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 30},
                                                       "maxItems": 4}},
          "required": ["name", "age", "hobbies"], "additionalProperties": False}
RECIPE = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 60},
                                           "ingredients": {"type": "array", "items": {"type": "string", "maxLength": 40},
                                                           "minItems": 1, "maxItems": 6},
                                           "minutes": {"type": "integer", "minimum": 1, "maximum": 600}},
          "required": ["title", "ingredients", "minutes"], "additionalProperties": False}
BOOK = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 60},
                                         "author": {"type": "string", "maxLength": 40},
                                         "year": {"type": "integer", "minimum": 1000, "maximum": 2030},
                                         "genre": {"enum": ["fiction", "non-fiction", "poetry", "science", "history"]}},
        "required": ["title", "author", "year", "genre"], "additionalProperties": False}
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                            "celsius": {"type": "number", "minimum": -60, "maximum": 60},
                                            "sky": {"enum": ["clear", "cloudy", "rain", "snow", "storm"]},
                                            "wind_kmh": {"type": "integer", "minimum": 0, "maximum": 300}},
           "required": ["city", "celsius", "sky"], "additionalProperties": False}
TASKS = {"type": "object", "properties": {"tasks": {"type": "array", "minItems": 1, "maxItems": 4, "items": {
    "type": "object", "properties": {"task": {"type": "string", "maxLength": 50}, "done": {"type": "boolean"}},
    "required": ["task", "done"], "additionalProperties": False}}},
         "required": ["tasks"], "additionalProperties": False}
REQUESTS = [
    ("Describe a fictional person as JSON: name, age and hobbies.", PERSON),
    ("Invent a character for a children's story and give their details as JSON.", PERSON),
    ("Give me a profile of a retired sailor as JSON.", PERSON),
    ("Describe a young programmer who loves music, in JSON.", PERSON),
    ("Give me a simple pancake recipe as JSON.", RECIPE),
    ("A quick vegetable soup recipe, as JSON please.", RECIPE),
    ("Write a recipe for lemonade in JSON.", RECIPE),
    ("How do I make scrambled eggs? Answer as a JSON recipe.", RECIPE),
    ("Tell me about a famous novel as JSON with title, author, year and genre.", BOOK),
    ("Recommend a history book, as JSON.", BOOK),
    ("Give me details of a classic poetry collection in JSON.", BOOK),
    ("Describe a popular science book in JSON.", BOOK),
    ("Report the weather in Paris today as JSON.", WEATHER),
    ("What is the weather like in Oslo in winter? Answer in JSON.", WEATHER),
    ("Give a JSON weather report for a stormy day in Miami.", WEATHER),
    ("JSON weather for Tokyo on a clear spring day.", WEATHER),
    ("List my chores for today as JSON tasks: laundry, dishes, shopping.", TASKS),
    ("Make a JSON to-do list for planning a birthday party.", TASKS),
    ("Turn this into JSON tasks: call mom (done), pay rent (not done).", TASKS),
    ("A JSON task list for learning Python this week.", TASKS),
]


def ask(client, prompt: str, schema: dict, max_tokens: int, draft: bool) -> dict:
    start = time.perf_counter()
    answer = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}},
        extra_body={} if draft else {"num_draft_tokens": 0})
    seconds = time.perf_counter() - start
    usage = answer.usage
    speculative = getattr(usage, "speculative", None) or (usage.model_extra or {}).get("speculative") or {}
    return {"text": answer.choices[0].message.content, "finish": answer.choices[0].finish_reason,
            "tokens": usage.completion_tokens, "seconds": seconds, "drafted": speculative.get("drafted", 0),
            "accepted": speculative.get("accepted", 0)}


def valid(text: str, schema: dict) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), schema)
        return True
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False


def main() -> None:
    import openai

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()
    (RESULTS / "structured").mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = start([sys.executable, "-m", "mlxspec", "serve", "--demo", "--port", str(port)], port, "structured")
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=600, max_retries=0)
        rows = []
        for prompt, schema in REQUESTS:
            spec, plain = (ask(client, prompt, schema, args.max_tokens, draft) for draft in (True, False))
            rows.append({"prompt": prompt, "speculative": spec, "plain": plain, "valid": valid(spec["text"], schema),
                         "equal": spec["text"] == plain["text"]})
            print(f"{rows[-1]['valid']!s:5} {rows[-1]['equal']!s:5} {spec['tokens']:4d} tokens  {spec['text'][:70]!r}",
                  flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    write(rows, args.max_tokens)


def write(rows: list[dict], max_tokens: int) -> None:
    rate = lambda side: sum(r[side]["tokens"] for r in rows) / sum(r[side]["seconds"] for r in rows)  # noqa: E731
    summary = {"requests": len(rows), "valid": sum(r["valid"] for r in rows), "equal": sum(r["equal"] for r in rows),
               "finished": sum(r["speculative"]["finish"] == "stop" for r in rows),
               "speculative_tok_s": rate("speculative"), "plain_tok_s": rate("plain"),
               "drafted": sum(r["speculative"]["drafted"] for r in rows),
               "accepted": sum(r["speculative"]["accepted"] for r in rows),
               "max_tokens": max_tokens}
    summary["speedup"] = summary["speculative_tok_s"] / summary["plain_tok_s"]
    out = RESULTS / "structured"
    (out / "report.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    lines = ["# Structured output against `mlxspec serve --demo` (json_schema, strict, greedy)", "",
             f"{summary['valid']}/{summary['requests']} answers parse and validate against their schema "
             f"(jsonschema); {summary['equal']}/{summary['requests']} speculative answers equal the plain ones; "
             f"{summary['finished']} ended by themselves (finish_reason stop).", "",
             "| | tok/s (one client, whole answers) |", "|---|---|",
             f"| speculative (the server's default) | {summary['speculative_tok_s']:.1f} |",
             f"| plain (`num_draft_tokens: 0`) | {summary['plain_tok_s']:.1f} |",
             f"| ratio | {summary['speedup']:.2f}x ({summary['accepted']} of {summary['drafted']} drafted tokens "
             "accepted; the adaptive policy drafts only where its measured costs say it pays) |", "",
             "| prompt | valid | equal | tokens | answer |", "|---|---|---|---|---|"]
    lines += [f"| {r['prompt']} | {r['valid']} | {r['equal']} | {r['speculative']['tokens']} | "
              f"`{r['speculative']['text'][:80].replace('|', '/')}` |" for r in rows]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:9]))


if __name__ == "__main__":
    main()
