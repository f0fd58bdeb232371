"""A target and a draft converted together, with a manifest `mlxspec generate --pair` reads
and a verdict on whether their tokenizers agree."""

from __future__ import annotations

import json
from pathlib import Path

from mlxspec.errors import MlxspecError
from mlxspec.text import compare_vocabularies, load_tokenizer

from .atomic import atomic_dir, check_writable
from .converter import DTYPES, Progress, check_options, resolve_source, write_model
from .sources import open_source

MANIFEST = "pair.json"


def compare_tokenizers(target_dir: Path, draft_dir: Path) -> tuple[str, str]:
    """Verdict on the tokenizers stored in two model folders (see `compare_vocabularies`)."""
    try:
        a, b = load_tokenizer(target_dir), load_tokenizer(draft_dir)
    except MlxspecError as exc:
        return "different", f"a tokenizer could not be loaded ({exc})"
    return compare_vocabularies(a, b)


def convert_pair(
    target: str | Path, draft: str | Path, out: str | Path, bits: int | None = None,
    draft_bits: int | None = None, group_size: int = 64, dtype: str | None = None,
    force: bool = False, revision: str | None = None, max_shard_bytes: int = 2 * 1024**3,
    progress: dict[str, Progress] | None = None,
) -> dict:
    """Write OUT/target, OUT/draft and OUT/pair.json atomically; return the manifest."""
    check_options(bits, group_size, dtype)
    check_options(draft_bits, group_size, dtype)
    out = Path(out)
    check_writable(out, force)
    sources = {"target": open_source(resolve_source(target, revision)),
               "draft": open_source(resolve_source(draft, revision))}
    cast = DTYPES[dtype] if dtype else None
    with atomic_dir(out, force) as tmp:
        for role, source in sources.items():
            (tmp / role).mkdir()
            role_bits = bits if role == "target" else draft_bits
            write_model(source, tmp / role, role_bits, group_size, cast, max_shard_bytes,
                        (progress or {}).get(role))
        verdict, why = compare_tokenizers(tmp / "target", tmp / "draft")
        manifest = {
            "format": "mlxspec-pair", "version": 1, "target": "target", "draft": "draft",
            "sources": {"target": str(target), "draft": str(draft)},
            "bits": {"target": bits, "draft": draft_bits}, "group_size": group_size,
            "tokenizers": verdict, "tokenizers_detail": why,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest
