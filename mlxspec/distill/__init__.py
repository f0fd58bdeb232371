"""`mlxspec distill`: train a draft for your own target on your own machine — the target's
answers to prompts as data, a feature draft (EAGLE-style, trained on its own predictions
for later positions) or a small draft model, evaluated through mlxspec's speculative loop."""

from .drafts import KINDS
from .run import distill

__all__ = ["KINDS", "distill"]
