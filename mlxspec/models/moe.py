"""The sparse mixture-of-experts feed-forward of Mixtral (Jiang et al. 2024, "Mixtral of Experts").

Each layer holds E SwiGLU experts and a router (a linear map to E scores). A token is sent
to its top-k experts (k = 2 in Mixtral); their outputs are summed, weighted by the softmax
over the k chosen scores (equal to transformers' renormalised top-k of the softmax over all E).

The experts of a layer are stored stacked ([E, out, in], mlx-lm's `switch_mlp` names) and
run with `mx.gather_mm` / `mx.gather_qmm`: every (token, chosen expert) pair multiplies
only its expert's matrix. For a pass over several tokens (prefill, a speculative round's
verification) the pairs are first sorted by expert, so each expert's matrix is read once
for all the tokens that chose it. No I/O and no device choice here.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .config import ModelArgs


class SwitchLinear(nn.Module):
    """E stacked bias-free linear layers; row r of the input goes through expert `indices[r]`."""

    def __init__(self, input_dims: int, output_dims: int, num_experts: int) -> None:
        super().__init__()
        scale = input_dims**-0.5
        self.weight = mx.random.uniform(-scale, scale, (num_experts, output_dims, input_dims))

    def __call__(self, x: mx.array, indices: mx.array, sorted_indices: bool = False) -> mx.array:
        return mx.gather_mm(x, self.weight.swapaxes(-1, -2), rhs_indices=indices, sorted_indices=sorted_indices)

    def to_quantized(self, group_size: int = 64, bits: int = 4, mode: str = "affine") -> "QuantizedSwitchLinear":
        """The same experts in MLX's affine quantization (what `nn.quantize` calls)."""
        return QuantizedSwitchLinear.from_weight(self.weight, group_size, bits, mode)


class QuantizedSwitchLinear(nn.Module):
    """`SwitchLinear` with quantized experts (`weight`, `scales`, `biases` stacked per expert)."""

    def __init__(self, input_dims: int, output_dims: int, num_experts: int, group_size: int = 64,
                 bits: int = 4, mode: str = "affine") -> None:
        super().__init__()
        self.group_size, self.bits, self.mode = group_size, bits, mode
        shape = (num_experts, output_dims, input_dims)
        self.weight, self.scales, self.biases = mx.quantize(mx.zeros(shape), group_size, bits, mode=mode)
        self.freeze()

    @classmethod
    def from_weight(cls, weight: mx.array, group_size: int, bits: int, mode: str) -> "QuantizedSwitchLinear":
        layer = cls(weight.shape[2], weight.shape[1], weight.shape[0], group_size, bits, mode)
        layer.weight, layer.scales, layer.biases = mx.quantize(weight, group_size, bits, mode=mode)
        return layer

    def __call__(self, x: mx.array, indices: mx.array, sorted_indices: bool = False) -> mx.array:
        return mx.gather_qmm(x, self.weight, self.scales, self.biases, rhs_indices=indices, transpose=True,
                             group_size=self.group_size, bits=self.bits, mode=self.mode,
                             sorted_indices=sorted_indices)


class SwitchGLU(nn.Module):
    """E SwiGLU experts: down(silu(gate(x)) * up(x)) with the expert chosen per (token, slot)."""

    def __init__(self, hidden_size: int, intermediate_size: int, num_experts: int) -> None:
        super().__init__()
        self.gate_proj = SwitchLinear(hidden_size, intermediate_size, num_experts)
        self.up_proj = SwitchLinear(hidden_size, intermediate_size, num_experts)
        self.down_proj = SwitchLinear(intermediate_size, hidden_size, num_experts)

    def __call__(self, x: mx.array, indices: mx.array) -> mx.array:
        """x [..., d], indices [..., k] -> each chosen expert's output [..., k, d]."""
        *lead, k = indices.shape
        by_expert = indices.size > k  # several tokens: sort the (token, expert) pairs by expert
        if by_expert:
            order = mx.argsort(indices.flatten())
            rows = x.reshape(-1, 1, x.shape[-1])[order // k]  # [N*k, 1, d], grouped by expert
            chosen = indices.flatten()[order]
        else:
            rows, chosen = mx.expand_dims(x, (-2, -3)), indices  # [..., 1, 1, d] against [..., k]
        h = nn.silu(self.gate_proj(rows, chosen, by_expert)) * self.up_proj(rows, chosen, by_expert)
        out = self.down_proj(h, chosen, by_expert)
        if by_expert:
            out = out[mx.argsort(order)]  # back to token order
        return out.reshape(*lead, k, -1)


class SparseMoE(nn.Module):
    """Router + experts: sum over the top-k experts of softmax(chosen scores) x expert(x)."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.top_k = args.num_experts_per_tok
        self.gate = nn.Linear(args.hidden_size, args.num_local_experts, bias=False)
        self.switch_mlp = SwitchGLU(args.hidden_size, args.intermediate_size, args.num_local_experts)

    def route(self, x: mx.array) -> tuple[mx.array, mx.array]:
        """The experts each token reads [..., k] and their weights [..., k] (summing to 1)."""
        scores = self.gate(x)
        chosen = mx.argpartition(-scores, kth=self.top_k - 1, axis=-1)[..., : self.top_k]
        weights = mx.softmax(mx.take_along_axis(scores, chosen, axis=-1).astype(mx.float32), axis=-1)
        return chosen, weights.astype(x.dtype)

    def __call__(self, x: mx.array) -> mx.array:
        chosen, weights = self.route(x)
        return (self.switch_mlp(x, chosen) * weights[..., None]).sum(axis=-2)
