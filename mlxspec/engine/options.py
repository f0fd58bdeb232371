"""A request's options: one dataclass of how to sample and when to stop, from every edge to
the sampler. The command line builds its options from these fields (their help and flags
live here), the server maps a request's JSON onto them, and the library's keywords are
their names; each value is checked once, here, with one message wherever it came from.
A new option is a field here and its effect in the sampler (`SamplingParams`, `penalties`).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Mapping

from ..errors import InputError, InputTypeError
from ..structured.format import ResponseFormat, response_format
from ..text.stops import check_stops
from ..validate import int_text, is_int, is_real
from .choices import MAX_CHOICES, check_choices
from .logprobs import check_logprobs
from .sampling import SamplingParams, check_seed


def option(default: Any, help: str, *flags: str, json_names: tuple[str, ...] = ()) -> Any:
    """A field with its help text and command-line flags (default: --field-name);
    `json_names` are the request-body keys that also set it, before its own name."""
    return field(default=default, metadata={"help": help, "flags": flags, "json": json_names})


@dataclass(frozen=True)
class GenerationOptions:
    """How one request samples and when it stops."""

    max_tokens: int = option(256, "Most tokens to generate.", "--max-tokens", "-n",
                             json_names=("max_completion_tokens",))
    n: int = option(1, f"Choices to generate for the prompt (1..{MAX_CHOICES}): it is prefilled once and each choice "
                       "draws with its own random stream (with --seed: choice 0 from the seed, the others from seeds "
                       "derived from it).", "--n", "-N")
    temperature: float = option(0.0, "Sampling temperature; 0 is greedy (argmax).", "--temperature", "--temp", "-t")
    top_p: float = option(1.0, "Nucleus sampling: keep the most likely tokens up to this mass (1 disables).")
    top_k: int = option(0, "Keep only the k most likely tokens (0 disables).")
    min_p: float = option(0.0, "Drop tokens less likely than this fraction of the most likely one (0 disables).")
    repetition_penalty: float = option(1.0, "Above 1 discourages repeating recent tokens (1 disables).")
    repetition_context: int = option(64, "How many recent tokens the penalties look at.", "--repetition-context",
                                     "--repetition-context-size", json_names=("repetition_context_size",))
    presence_penalty: float = option(0.0, "Lower the logit of every token seen recently by this much (-2..2).")
    frequency_penalty: float = option(0.0, "Lower a token's logit by this much per recent occurrence (-2..2).")
    logit_bias: tuple = option((), "Add a bias (-100..100) to token ids' logits: 'ID=BIAS,ID=BIAS' or a JSON "
                                   "object {\"ID\": BIAS}.")
    seed: int | None = option(None, "Random seed: the same seed and prompt give the same text (-1: random).")
    stop: tuple = option((), "Stop before this text (never printed); repeat for several.")
    logprobs: int | None = option(None, "Report each token's log-probability and this many alternatives (0..20).")
    response_format: ResponseFormat | None = option(
        None, "Hold the output to a format: 'json' (any JSON object), a JSON schema or OpenAI's response_format "
              "object as JSON text, or a file: a JSON schema (.json) or a grammar (Lark or GBNF). Speculation "
              "stays exact under it.", "--response-format", "--format")

    def __post_init__(self) -> None:
        set_field = object.__setattr__  # frozen: normalised once, here
        set_field(self, "stop", tuple(check_stops(_listed(self.stop))))
        set_field(self, "logit_bias", logit_bias_pairs(self.logit_bias))
        set_field(self, "seed", check_seed(self.seed))
        set_field(self, "logprobs", check_logprobs(self.logprobs))
        set_field(self, "response_format", response_format(self.response_format))
        if not is_int(self.max_tokens):
            raise InputTypeError(f"max_tokens must be an integer, got {self.max_tokens!r}")
        if self.max_tokens < 0:
            raise InputError(f"max_tokens must be >= 0, got {self.max_tokens}")
        set_field(self, "n", check_choices(self.n))
        self.sampling  # noqa: B018 -- checks every sampling field

    @property
    def sampling(self) -> SamplingParams:
        """The part that shapes the distribution (what the sampler applies)."""
        return SamplingParams(**{f.name: getattr(self, f.name) for f in fields(SamplingParams)})

    def with_values(self, values: Mapping[str, Any], where: str = "") -> GenerationOptions:
        """These options with `values` (by field name) replacing theirs; an unknown name is
        an `InputError` naming it (`where` says where the names came from)."""
        unknown = sorted(set(values) - set(option_names()))
        if unknown:
            raise InputTypeError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
                                 f"{where} (known: {', '.join(option_names())})")
        return replace(self, **values)


def option_names() -> tuple[str, ...]:
    """Every option's name, in the dataclass's order."""
    return tuple(f.name for f in fields(GenerationOptions))


def option_default(name: str) -> Any:
    """The library's default for option `name`."""
    f = next(f for f in fields(GenerationOptions) if f.name == name)
    return f.default if f.default is not MISSING else f.default_factory()


def _listed(stop: object) -> object:
    """A tuple of stop strings as the list `check_stops` takes (other values as given)."""
    return list(stop) if isinstance(stop, tuple) else stop


def logit_bias_pairs(bias: object) -> tuple[tuple[int, float], ...]:
    """(token id, bias) pairs sorted by id, from a mapping (JSON's string keys "123" too), a
    sequence of pairs, or text: 'ID=BIAS,ID=BIAS' or a JSON object."""
    if bias is None:
        return ()
    if isinstance(bias, str):
        bias = _parse_bias(bias)
    if isinstance(bias, Mapping):
        bias = list(bias.items())
    if not isinstance(bias, (list, tuple)) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in bias):
        raise InputTypeError(f"logit_bias must map token ids to numbers, got {bias!r}")
    pairs = {}
    for token, value in bias:
        if isinstance(token, str) and int_text(token) is not None:
            token = int_text(token)
        if not is_int(token):
            raise InputError(f"logit_bias: a token id must be an integer >= 0, got {token!r}")
        if not is_real(value):
            raise InputError(f"logit_bias: the bias of token {token} must be a number in -100..100, got {value!r}")
        pairs[int(token)] = float(value)
    return tuple(sorted(pairs.items()))


def _parse_bias(text: str) -> object:
    """'ID=BIAS,ID=BIAS' or a JSON object, as given on a command line."""
    if text.strip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"logit_bias: not a JSON object ({e.msg})") from None
        except (ValueError, RecursionError):  # a number of more digits than Python converts, deep nesting
            raise InputError("logit_bias: not a usable JSON object (a number too long or nesting too deep)") from None
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        token, sep, value = part.partition("=")
        try:
            pairs.append((token.strip(), float(value)))
        except ValueError:
            raise InputError(f"logit_bias: {part!r} is not ID=BIAS") from None
        if not sep:
            raise InputError(f"logit_bias: {part!r} is not ID=BIAS")
    return pairs
