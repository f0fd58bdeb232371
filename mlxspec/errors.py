"""Errors raised at mlxspec's edges: each says what went wrong and where.

The CLI turns any `MlxspecError` into one line on stderr and a non-zero exit code.
"""


class MlxspecError(Exception):
    """Base class of every error mlxspec raises on purpose."""

    exit_code = 1


class ConfigError(MlxspecError):
    """A model configuration is missing, unreadable or describes something unsupported."""


class UnsupportedModelError(ConfigError):
    """A configuration that mlxspec's own port does not implement (an architecture, a RoPE
    scaling) though another implementation may run it (`models.config.port_supports`)."""


class CheckpointError(MlxspecError):
    """Weights are missing, truncated, or do not match the configuration."""


class TokenizerError(MlxspecError):
    """No usable tokenizer was found next to the weights."""


class OutputError(MlxspecError):
    """An output cannot or may not be written where asked: it exists, mlxspec did not write
    it, it is a source, another process is writing it, or the disk refuses."""


class InputError(MlxspecError, ValueError):
    """A request to the library or CLI is invalid (empty prompt, negative budget, ...).
    Also a `ValueError`, as Python code expects of a bad value."""

    exit_code = 2


class InputTypeError(InputError, TypeError):
    """A library argument of the wrong type (bytes for a prompt, a path for a model, ...).
    Also a `TypeError`."""


class ContextError(InputError):
    """A prompt longer than the model's context: a conversation that has outgrown it, or a
    message that alone cannot fit. The chat offers to make room instead of ending."""


class FitError(MlxspecError):
    """A run needs more memory than the device allows (`mlxspec plan`; the commands' fit
    check, before any weight is read)."""

    exit_code = 3
