"""What the input checks cost a forward, and what ``torch.compile`` does with them.

The models check their inputs in every forward: shapes and dtypes everywhere, and token ids'
range where reading values is free (CPU tensors in eager mode, ``tfbook._validate``'s
``values_readable``). This benchmark times, side by side in interleaved rounds, one GPT forward
(eval mode, no grad) at the capstone's size and at a decoding step's size (one new token
with a KV cache, where fixed costs dominate):

- ``checked``: as shipped, value checks on (CPU);
- ``no value checks``: the same model with ``values_readable`` forced to False, i.e. what a GPU
  or a compiled model runs;
- ``compiled``: ``torch.compile(model, backend="eager", fullgraph=True)`` (one graph, the
  Python checks traced away; no code generation, so it measures the Python overhead only).

It prints the median time of each and the ratios to ``checked``. Run it with
``python benchmarks/bench_checks.py``.
"""

from __future__ import annotations

import argparse
import statistics
from unittest import mock

import torch
from bench_capstone import time_rounds  # the sibling script (benchmarks/ is on sys.path)

from tfbook import _validate
from tfbook.model import GPT, TransformerConfig


def _config() -> TransformerConfig:
    return TransformerConfig(
        vocab_size=89,
        d_model=128,
        n_heads=4,
        d_ff=512,
        n_layers=4,
        max_len=256,
        dropout=0.0,
        norm_first=True,
        positional="learned",
        activation="gelu_tanh",
        scale_embeddings=False,
    )


def _median_ms(fns: dict, rounds: int, warmup: int) -> dict[str, float]:
    times = time_rounds(fns, rounds, warmup)  # interleaved rounds, as every benchmark here
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = GPT(_config()).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    cases = {
        "batch (B=16, T=256)": torch.randint(0, 89, (16, 256)),
        "one token (B=1, T=1)": torch.randint(0, 89, (1, 1)),
    }
    print(f"GPT forward, eval, no grad; median of {args.rounds} interleaved rounds")
    for label, ids in cases.items():

        def unchecked(ids=ids):
            with mock.patch.object(_validate, "values_readable", lambda t: False):
                return model(ids)

        with torch.no_grad():
            ms = _median_ms(
                {
                    "checked": lambda ids=ids: model(ids),
                    "no value checks": unchecked,
                    "compiled": lambda ids=ids: compiled(ids),
                },
                args.rounds,
                args.warmup,
            )
        print(f"  {label}:")
        for name, t in ms.items():
            print(f"    {name:<16} {t:8.3f} ms   ratio {t / ms['checked']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
