"""`FitRequest`: what a run asks of memory beyond the model itself — the tokens each row holds,
the rows, how the KV cache and the weights are stored — one typed object shared by `mlxspec plan`
and the fit check of the commands that load a model."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from ..models.kv_quantization import BITS as KV_BITS, GROUP_SIZES as KV_GROUP_SIZES

DEFAULT_CONTEXT = 4096  # when neither the command nor the user names one (llama.cpp's and LM Studio's default)


@dataclass(frozen=True)
class FitRequest:
    """`context`: tokens a row holds (None: the model's context, at most `DEFAULT_CONTEXT`);
    `batch`: rows decoded together; `kv_bits`/`kv_group_size`: a quantized KV cache (None: the
    activations' float type); `dequantize`: weights expanded to float32 at load (the CPU
    backend's default); `prefill_chunk`: prompt tokens a pass (None: the window, else 2048);
    `draft_tokens`: the most tokens drafted a round (what a rolling cache keeps to roll back)."""

    context: int | None = None
    batch: int = 1
    kv_bits: int | None = None
    kv_group_size: int = 64
    dequantize: bool = False
    prefill_chunk: int | None = None
    draft_tokens: int = 6

    def __post_init__(self) -> None:
        if self.context is not None and self.context < 1:
            raise InputError(f"--context must be >= 1, got {self.context}")
        if self.batch < 1:
            raise InputError(f"--batch must be >= 1, got {self.batch}")
        if self.kv_bits is not None and self.kv_bits not in KV_BITS:
            raise InputError(f"--kv-bits must be one of {', '.join(map(str, KV_BITS))}, got {self.kv_bits}")
        if self.kv_group_size not in KV_GROUP_SIZES:
            raise InputError(f"--kv-group-size must be one of {', '.join(map(str, KV_GROUP_SIZES))}, "
                             f"got {self.kv_group_size}")
        if self.prefill_chunk is not None and self.prefill_chunk < 1:
            raise InputError(f"--prefill-chunk must be >= 1, got {self.prefill_chunk}")

    def tokens(self, model_context: int | None) -> int:
        """Tokens a row holds for a model of `model_context` positions."""
        if self.context is not None:
            return self.context
        return min(model_context or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
