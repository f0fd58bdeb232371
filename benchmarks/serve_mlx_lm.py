"""mlx_lm.server with the demo pair, for `benchmarks/serve.py`: the same target weights and
the same draft (mlxspec's shipped draft has a head over its 8192 most frequent tokens,
which mlx-lm cannot load, so the draft reaches mlx-lm's server as the module
`mlxspec.baseline` builds for `bench --compare-mlx-lm`: mlx-lm's body under that head).

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
    _, their_draft = mlx_lm_models(target, draft)
    original = server.load

    def load_with_our_draft(path, *a, **kw):
        if path == DRAFT:  # the draft: mlx-lm's body under our head, with the target's tokenizer
            _, their_tokenizer = original(target_dir)
            return their_draft, their_tokenizer
        return original(path, *a, **kw)

    server.load = load_with_our_draft
    sys.argv = ["mlx_lm.server", "--model", target_dir, "--port", str(args.port), "--temp", "0",
                "--log-level", "WARNING"]
    if not args.no_draft:
        sys.argv += ["--draft-model", DRAFT, "--num-draft-tokens", str(args.num_draft_tokens)]
    server.main()


if __name__ == "__main__":
    main()
