"""Record llama.cpp's own tokenization of SmolLM2-135M-Instruct's GGUF vocabulary, the oracle
for the tokenizer mlxspec rebuilds from a GGUF file (tests/test_gguf.py).

llama-cpp-python compiles llama.cpp from source when it is installed (minutes), so the
default test run reads the ids recorded here, and a run with llama-cpp-python installed
(`pip install -e '.[oracles]'`; CI does) checks the recording against llama.cpp live.
Run this again after changing TEXTS or upgrading llama.cpp:

    python tests/record_llama_cpp_tokens.py   # writes tests/fixtures/llama_cpp_smollm2.json
"""

from __future__ import annotations

import json
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "llama_cpp_smollm2.json"

# Plain prose, numbers, code, accents, other scripts, emoji, whitespace runs, and text that
# holds a special token.
TEXTS = [
    "Hello world", "The year 2024 had 366 days.", "def f(x):\n    return x**2  # square",
    "naïve café — “quotes”", "日本語", "emoji 🧪", "   spaces   and\ttabs\n\nnewlines",
    "3.14159265358979 and 1,000,000 and 0x1F", "I'm we'll they've DON'T", "<|im_start|>user",
    "Ünïcödé Straße İstanbul", "Привет, мир! Καλημέρα", "مرحبا بالعالم", "👩‍👩‍👧‍👦 family 🇫🇷",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }", "{\"key\": [1, 2, {\"x\": null}]}",
    "\n\n\n", " ", "a" * 40, "https://example.com/path?q=1&r=two#frag",
]


def tokenize(gguf: Path, texts: list[str]) -> list[list[int]]:
    """llama.cpp's ids for each text: no BOS; special-token text parsed as the special token, as
    HF tokenizers (and so mlx-lm) and mlxspec do."""
    import llama_cpp

    ref = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    return [ref.tokenize(text.encode(), add_bos=False, special=True) for text in texts]


def main() -> None:
    import llama_cpp

    from mlxspec.demo import smollm2_gguf

    gguf = smollm2_gguf()
    cases = [json.dumps({"text": t, "ids": ids}, ensure_ascii=False) for t, ids in zip(TEXTS, tokenize(gguf, TEXTS))]
    head = json.dumps({"llama_cpp_python": llama_cpp.__version__, "gguf": gguf.name})[:-1]
    FIXTURE.write_text(head + ', "cases": [\n' + ",\n".join(cases) + "\n]}\n", encoding="utf-8")
    print(f"wrote {FIXTURE} ({len(TEXTS)} texts, llama-cpp-python {llama_cpp.__version__})")


if __name__ == "__main__":
    main()
