"""The plan of a run: the target's and the draft's footprints at the request's context, their
total against the device's limit, and, when it does not fit, what to change (keep weights
quantized, fewer bits, a quantized KV cache, a shorter context, fewer rows, a smaller draft),
each with what it saves, computed by planning again with that change."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .device import DeviceLimit
from .footprint import CACHE_STEP, Footprint, footprint, tensor_loaded_bytes
from .request import FitRequest
from .shape import FLOAT_BYTES, ModelShape

GB = 1e9
BITS_ADVISED = 4  # what `mlxspec convert --bits 4 --group-size 64` stores: 4.5 bits a weight
BITS_PER_WEIGHT = 4.5


@dataclass
class Plan:
    """Footprints, total, limit and verdict (`advice` empty when it fits)."""

    target: ModelShape
    draft: ModelShape | None
    request: FitRequest
    tokens: int
    device: DeviceLimit
    target_fp: Footprint
    draft_fp: Footprint | None
    activations: int
    load_peak: int
    total: int
    advice: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.total <= self.device.limit


def make_plan(target: ModelShape, draft: ModelShape | None, request: FitRequest, device: DeviceLimit,
              advise: bool = True) -> Plan:
    """The plan for `target` (and `draft`) under `request` on `device`."""
    tokens = request.tokens(target.context)
    t = footprint(target, request, tokens, device.on_metal)
    d = footprint(draft, request, tokens, device.on_metal) if draft is not None else None
    kept_features = 0
    if draft is not None and draft.feature_draft:  # the prefill keeps the target's hidden states for it
        kept_features = tokens * target.hidden * (1 + draft.taps) * t.float_bytes
    activations = max(t.activations + kept_features, d.activations if d else 0)
    running = t.weights_loaded + t.kv_cache + (d.weights_loaded + d.kv_cache if d else 0) + activations
    loading = max(load_peak(target, request.dequantize),  # the draft loads once the target has
                  t.weights_loaded + (load_peak(draft, request.dequantize) if draft is not None else 0))
    plan = Plan(target, draft, request, tokens, device, t, d, activations, loading, max(running, loading))
    if advise and not plan.fits:
        plan.advice = advice(plan)
    return plan


def load_peak(shape: ModelShape, dequantize: bool) -> int:
    """Memory while the target loads: the weights as loaded, and while they are expanded or cast
    to float32 (one matrix at a time, `load.dequantize_weights`) the stored ones beside them
    (measured with mx.get_peak_memory: within 3 %, benchmarks/plan_accuracy.py)."""
    stored = sum(t.nbytes for t in shape.tensors)
    loaded = sum(tensor_loaded_bytes(shape, dequantize).values())
    return loaded + (stored if dequantize and stored != loaded else 0)


def _gb(n: float) -> str:
    return f"{n / GB:.2f} GB"


def _saves(plan: Plan, **change) -> int:
    """Bytes a changed request saves."""
    again = make_plan(plan.target, plan.draft, replace(plan.request, **change), plan.device, advise=False)
    return plan.total - again.total


def advice(plan: Plan) -> list[str]:
    """What to change so that the run fits, most effective first."""
    over = plan.total - plan.device.limit
    tips: list[tuple[int, str]] = []
    if plan.request.dequantize and plan.target_fp.weights_stored < plan.target_fp.weights_loaded:
        tips.append((_saves(plan, dequantize=False), "--keep-quantized (weights as stored, not float32)"))
    quantizable = _quantization_saving(plan.target)
    if quantizable > 0 and not plan.request.dequantize:
        tips.append((quantizable, f"--bits {BITS_ADVISED} (mlxspec convert)"))
    if plan.request.kv_bits is None:
        tips.append((_saves(plan, kv_bits=4), "--kv-bits 4"))
    context = _largest(plan, "context", plan.tokens, CACHE_STEP)
    if context and context < plan.tokens:
        tips.append((_saves(plan, context=context), f"--context {context} (fits)"))
    batch = _largest(plan, "batch", plan.request.batch, 1)
    if plan.request.batch > 1 and batch:
        tips.append((_saves(plan, batch=batch), f"--batch {batch} (fits)"))
    if plan.draft_fp is not None:
        room = plan.draft_fp.weights_loaded - over
        tips.append((plan.draft_fp.weights_loaded + plan.draft_fp.kv_cache,
                     f"a draft of <= {_gb(room)}" if room > 0 else "no draft"))
    tips = [(saved, text) for saved, text in tips if saved > 0.01 * over]  # never a tip that cannot matter
    tips.sort(key=lambda tip: -tip[0])
    return [f"{text} saves {_gb(saved)}" if "fits" not in text else f"{text}, saving {_gb(saved)}"
            for saved, text in tips]


def _quantization_saving(shape: ModelShape) -> int:
    """Bytes saved by storing the float matrices at 4 bits (4.5 with scales and biases)."""
    matrices = [t for t in shape.tensors if len(t.shape) >= 2 and t.dtype in FLOAT_BYTES]
    return int(sum(t.nbytes - t.elements * BITS_PER_WEIGHT / 8 for t in matrices))


def _largest(plan: Plan, name: str, upper: int, step: int) -> int:
    """The largest value of a request field (a multiple of `step`, below `upper`) that fits; 0: none."""
    lo, hi = 0, upper // step
    while lo < hi:
        mid = (lo + hi + 1) // 2
        again = make_plan(plan.target, plan.draft, replace(plan.request, **{name: mid * step}), plan.device, False)
        lo, hi = (mid, hi) if again.fits else (lo, mid - 1)
    return lo * step
