"""A kind of draft is one object: it makes drafters (for one sequence, and for a batch when
it batches), checks itself against a target, describes and fingerprints itself, and names
the vocabulary it proposes from. Kinds are found by name: `--draft NAME` and
`Session(..., "NAME")` look the name up here, and a draft folder's `config.json` names its
kind with `"draft_type"`. A new kind is one module that defines the object and registers it
(`register`); nothing outside `mlxspec.drafts` asks what kind a draft is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

from ..errors import ConfigError
from ..models import KVQuantization, Model
from .protocol import BatchDrafter, Drafter


@runtime_checkable
class DraftKind(Protocol):
    """What every kind of draft answers."""

    batches: bool  # whether `batch_drafter` gives a drafter (else a batch decodes without drafting)
    reads_features: bool  # whether its drafters read the target's hidden states

    def drafter(self, target: Model, k_max: int, chunk: int, greedy: bool,
                kv: KVQuantization | None = None) -> Drafter:
        """A fresh drafter (its own state) for one sequence, drafting up to `k_max` per round;
        its caches (if any) store keys/values as `kv` says (the target's setting)."""
        ...

    def batch_drafter(self, target: Model, chunk: int, kv: KVQuantization | None = None) -> BatchDrafter:
        """A fresh drafter for the rows of a batch (only when `batches`; caches as in `drafter`)."""
        ...

    def check(self, target: Model, num_draft_tokens: int) -> None:
        """Raise `InputError` when it cannot draft for `target` (vocabulary, sizes, taps)."""
        ...

    def describe(self) -> str:
        """One line saying what this draft is."""
        ...

    def vocabulary(self, target: Model) -> int:
        """The size of the vocabulary it proposes from."""
        ...

    def fingerprint(self) -> Any:
        """What the calibration's round times depend on (JSON-able)."""
        ...

    @property
    def timed(self) -> DraftKind:
        """The draft whose rounds the calibration times (a combination: its dearer part)."""
        ...

    @property
    def token_model(self) -> Model | None:
        """A plain language model over the target's vocabulary, as other runtimes (mlx-lm)
        can run it; None when this kind has none."""
        ...


@dataclass(frozen=True)
class DraftSettings:
    """What the command line sets for drafts named rather than loaded (prompt lookup's
    n-gram sizes, and how long a match puts lookup in front of a draft model)."""

    max_ngram: int = 3
    min_ngram: int = 1
    min_match: int = 3


Make = Callable[[DraftSettings], DraftKind]


@dataclass(frozen=True)
class Entry:
    """A registered kind: how to make it by name (`make`, None: only loaded from a folder),
    the class a folder's `draft_type` loads, and a line of help."""

    make: Make | None
    module: type | None
    help: str


class Registry:
    """Kinds of draft by name."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def register(self, name: str, make: Make | None = None, *, module: type | None = None, help: str = "") -> None:
        """Register a kind: by `name` on the command line (`make(settings)`), and/or as the
        `draft_type` of a draft folder whose weights load into `module(args)`."""
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"a draft kind's name is letters, digits, '-' and '_', got {name!r}")
        self.entries[name] = Entry(make, module, help)

    def makes(self, name: object) -> bool:
        """Whether `name` names a kind made by name (then it is no folder)."""
        entry = self.entries.get(name) if isinstance(name, str) else None
        return entry is not None and entry.make is not None

    def named(self, name: str, settings: DraftSettings = DraftSettings()) -> DraftKind | None:
        """The kind made by this name, None when no kind of that name is made by name."""
        entry = self.entries.get(name)
        return None if entry is None or entry.make is None else entry.make(settings)

    def folder_module(self, draft_type: object, where: str) -> type:
        """The module class a folder's `draft_type` loads; `ConfigError` for an unknown one."""
        entry = self.entries.get(draft_type) if isinstance(draft_type, str) else None
        if entry is None or entry.module is None:
            known = ", ".join(repr(n) for n, e in self.entries.items() if e.module is not None)
            raise ConfigError(f"{where}: unknown draft_type {draft_type!r} (supported: {known})")
        return entry.module

    def help(self, folders: bool = False) -> str:
        """The kinds made by name (`folders`: the draft types of folders), for `--draft`'s help."""
        return "; ".join(f"'{name}': {e.help}" for name, e in self.entries.items()
                         if (e.module if folders else e.make) is not None)


KINDS = Registry()
register = KINDS.register
