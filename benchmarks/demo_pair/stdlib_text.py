"""Real text available offline: the Python standard library's sources, their docstrings and
short functions. Every tenth file is held out (distill.py evaluates on it)."""

from __future__ import annotations

import ast
import sysconfig
import textwrap
from pathlib import Path
from typing import Iterator

from mlxspec.text import Tokenizer


def stdlib_files() -> list[Path]:
    """The standard library's top-level modules over 2 kB, in a fixed (sorted) order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.glob("*.py") if p.stat().st_size > 2000)


def stdlib_pieces(tokenizer: Tokenizer, seq_len: int) -> Iterator[tuple[bool, list[list[int]]]]:
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
