"""mlx_lm.server with the demo pair, for `benchmarks/serve.py`: the same weights as mlxspec
serves, in float32 (the demo target's file is 4-bit, and quantized matmuls are slow on
MLX's CPU backend: mlxspec expands them at load here, so mlx-lm gets the expanded ones),
and the same draft model. Both reach mlx-lm's server as the modules `mlxspec.baseline`
builds for `bench --compare-mlx-lm` (mlx-lm's Llama module; the shipped draft's head over
its 8192 most frequent tokens, which mlx-lm cannot load, kept under mlx-lm's body).

    python benchmarks/serve_mlx_lm.py --port 8090 [--no-draft] [--num-draft-tokens 2]
"""

from __future__ import annotations

import argparse
import sys

import mlx.core as mx

DRAFT = "mlxspec-demo-draft"  # the name the server is told; the load below hands it the module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--no-draft", action="store_true", help="mlx_lm.server without a draft (it then batches)")
    parser.add_argument("--num-draft-tokens", type=int, default=2)
    args = parser.parse_args()

    import mlx_lm.server as server

    from mlxspec import demo, load, load_draft
    from mlxspec.baseline import mlx_lm_models

    target_dir = str(demo.demo_target())
    target, tokenizer = load(target_dir, dtype=mx.float32, dequantize=True)
    draft = load_draft(str(demo.demo_token_draft()), target, tokenizer, dtype=mx.float32, dequantize=True)
    their_target, their_draft = mlx_lm_models(target, draft)
    original = server.load

    def load_expanded(path, *a, **kw):
        """mlx-lm's own loading (tokenizer, config), our float32 modules."""
        model, their_tokenizer, *config = original(target_dir, *a, **kw)
        return (their_draft if path == DRAFT else their_target, their_tokenizer, *config)

    server.load = load_expanded
    sys.argv = ["mlx_lm.server", "--model", target_dir, "--port", str(args.port), "--temp", "0",
                "--log-level", "WARNING"]
    if not args.no_draft:
        sys.argv += ["--draft-model", DRAFT, "--num-draft-tokens", str(args.num_draft_tokens)]
    server.main()


if __name__ == "__main__":
    main()
