"""A target and a draft converted together, with a manifest `mlxspec generate --pair` reads
recording the pair's kind, decided before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

from mlxspec.drafts.pairing import PAIR_VERSION, pair_kind
from mlxspec.errors import TokenizerError

from .atomic import atomic_dir, check_writable
from .converter import (DTYPES, Progress, check_group_size, check_options, check_paths, resolve_source,
                        source_tokenizer, write_model)
from .other_architecture import OtherArchitecture, other_architecture
from .sources import Source, open_source

MANIFEST = "pair.json"


def _vocab_size(source: Source | OtherArchitecture) -> int:
    return source.vocab_size if isinstance(source, OtherArchitecture) else source.args.vocab_size


def convert_pair(
    target: str | Path, draft: str | Path, out: str | Path, bits: int | None = None,
    draft_bits: int | None = None, group_size: int = 64, dtype: str | None = None,
    force: bool = False, revision: str | None = None, max_shard_bytes: int = 2 * 1024**3,
    progress: dict[str, Progress] | None = None,
) -> dict:
    """Write OUT/target, OUT/draft and OUT/pair.json atomically; return the manifest.

    The pair's kind (see `mlxspec.drafts.pairing`) is decided before anything is written: a
    pair `load_pair` would refuse is refused here."""
    check_options(bits, group_size, dtype, max_shard_bytes, progress=progress)
    check_options(draft_bits, group_size, dtype, bits_option="--draft-bits")
    check_paths(target=target, draft=draft, out=out)
    out = Path(out)
    check_writable(out, force, sources=[target, draft], kind="pair")
    roots = {"target": resolve_source(target, revision), "draft": resolve_source(draft, revision)}
    sources = {role: other_architecture(root) or open_source(root) for role, root in roots.items()}
    tokenizers = {role: source.tokenizer() if isinstance(source, OtherArchitecture) else source_tokenizer(source)
                  for role, source in sources.items()}
    for role, tokenizer in tokenizers.items():
        if tokenizer is None:
            raise TokenizerError(f"{roots[role]}: the {role} carries no tokenizer, so the pair cannot be checked")
    kind, why = pair_kind(*((tokenizers[r], _vocab_size(sources[r])) for r in ("target", "draft")))
    for role, role_bits in (("target", bits), ("draft", draft_bits)):  # both, before either is written
        if not isinstance(sources[role], OtherArchitecture):
            check_group_size(sources[role], role_bits, group_size)
    cast = DTYPES[dtype] if dtype else None
    with atomic_dir(out, force, sources=roots.values(), kind="pair") as tmp:
        for role, source in sources.items():
            (tmp / role).mkdir()
            role_bits = bits if role == "target" else draft_bits
            if isinstance(source, OtherArchitecture):
                source.write(tmp / role, role_bits, group_size, cast)
            else:
                write_model(source, tmp / role, role_bits, group_size, cast, max_shard_bytes,
                            (progress or {}).get(role))
        manifest = {
            "format": "mlxspec-pair", "version": PAIR_VERSION, "kind": kind, "target": "target", "draft": "draft",
            "sources": {"target": str(target), "draft": str(draft)},
            "bits": {"target": bits, "draft": draft_bits}, "group_size": group_size, "tokenizers": why,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest
