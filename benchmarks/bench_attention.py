"""Benchmark of tfbook.attention.MultiHeadAttention against torch.nn.MultiheadAttention (chapter 4).

Forward + backward at B=16, T=256, d_model=256, h=8 on the CPU, float32, no mask, weights
copied with ``MultiHeadAttention.from_torch`` (so all three compute the same function).
The three contenders are timed in interleaved rounds in one run, and the script prints the
median time of each and the ratios to PyTorch's module:

- fast path (``need_weights=False``, ``F.scaled_dot_product_attention``): target ratio <= 1.0;
- explicit path (``need_weights=True``, scores and softmax written out): target ratio <= 2.0.

Run it with ``python benchmarks/bench_attention.py`` (``--help`` for the sizes); ``--json PATH``
also writes the figures (``make bench`` writes ``tfbook/data/capstone/bench_attention.json``,
which chapter 4 reads). Timings vary with the machine and its load; the ratios are what the
chapter quotes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from bench_capstone import machine_info
from torch import nn

from tfbook.attention import MultiHeadAttention


def _step(fn, x: torch.Tensor) -> None:
    x.grad = None
    out = fn(x)
    out.sum().backward()


def time_rounds(fns: dict, x: torch.Tensor, rounds: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per forward+backward of each function, interleaved round by round."""
    for _ in range(warmup):
        for fn in fns.values():
            _step(fn, x)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            _step(fn, x)
            times[name].append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)

    machine = machine_info()
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(args.d_model, args.heads, batch_first=True)
    ours = MultiHeadAttention.from_torch(ref)
    x = torch.randn(args.batch, args.seq_len, args.d_model, requires_grad=True)

    fns = {
        "torch.nn.MultiheadAttention": lambda t: ref(t, t, t, need_weights=False)[0],
        "tfbook fast path": lambda t: ours(t, t, t)[0],
        "tfbook explicit path": lambda t: ours(t, t, t, need_weights=True)[0],
    }
    with torch.no_grad():  # same function before timing anything
        expected = fns["torch.nn.MultiheadAttention"](x)
        for name in ("tfbook fast path", "tfbook explicit path"):
            torch.testing.assert_close(fns[name](x), expected, atol=1e-5, rtol=1e-4)

    times = time_rounds(fns, x, args.rounds, args.warmup)
    med = {name: statistics.median(t) for name, t in times.items()}
    base = med["torch.nn.MultiheadAttention"]
    print(
        f"forward+backward, B={args.batch}, T={args.seq_len}, d_model={args.d_model}, "
        f"h={args.heads}, float32, CPU, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, median of {args.rounds} interleaved rounds"
    )
    print(f"{'contender':<30}{'median ms':>12}{'ratio to torch':>16}")
    for name, m in med.items():
        print(f"{name:<30}{m * 1e3:>12.1f}{m / base:>16.2f}")
    fast, explicit = med["tfbook fast path"] / base, med["tfbook explicit path"] / base
    print(f"fast path ratio {fast:.2f} (target <= 1.0): {'met' if fast <= 1.0 else 'NOT met'}")
    print(
        f"explicit path ratio {explicit:.2f} (target <= 2.0): "
        f"{'met' if explicit <= 2.0 else 'NOT met'}"
    )
    if args.json is not None:
        machine["loadavg_after"] = machine_info()["loadavg_before"]
        results = {
            "machine": machine,
            "config": {
                "batch": args.batch,
                "seq_len": args.seq_len,
                "d_model": args.d_model,
                "heads": args.heads,
                "rounds": args.rounds,
            },
            "ms": {name: m * 1e3 for name, m in med.items()},
            "ratio_to_torch": {name: m / base for name, m in med.items()},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
