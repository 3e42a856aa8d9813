"""Benchmark of the KV cache: greedy generation with and without it (chapter 7).

Without a cache, every step of generation runs the model over the whole prefix again: step
``t`` costs the work of ``t`` tokens, so ``n`` new tokens cost about ``n^2 / 2`` tokens'
work. With :class:`tfbook.model.DecoderCache` a step runs the model over the one new token
and reads the earlier tokens' keys and values from the cache: ``n`` tokens' work in all
(plus attention over the cached keys, which is cheap at these lengths).

Two models, random weights (the speed does not depend on training), float32, CPU:

- GPT: 4 layers, d_model 128, 4 heads, max_len 320; a batch of 4 prompts of 16 tokens,
  256 new greedy tokens (:func:`tfbook.generate.generate`); target speed-up >= 5x;
- EncoderDecoder: the same sizes, a batch of 4 sources of 64 tokens, up to 256 greedy target
  tokens (:func:`tfbook.generate.greedy_translate`; both ways stop at the same ``<eos>``, if
  any); with the cache the memory's keys and values are also projected once instead of at
  every step.

Both ways must produce the same tokens (asserted). The contenders are timed in interleaved
rounds in one run, and the script prints the median time of each and the speed-up.

Run it with ``python benchmarks/bench_generate.py`` (``--help`` for the sizes). Timings vary
with the machine and its load; the ratio is what the chapter quotes. A cached step is many
small operations, which suffer most when other processes compete for the cores: on a shared
machine ``--threads 1`` gives steadier figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from tfbook.generate import generate, greedy_translate
from tfbook.model import GPT, EncoderDecoder, TransformerConfig

BOS, EOS = 2, 3


def time_rounds(fns: dict[str, Callable[[], torch.Tensor]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each function, interleaved round by round (after one warm-up)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def report(title: str, times: dict[str, list[float]], tokens: int, target: float | None) -> float:
    med = {name: statistics.median(t) for name, t in times.items()}
    without, with_cache = med["no cache (recompute prefix)"], med["KV cache"]
    speedup = without / with_cache
    print(title)
    print(f"  {'contender':<30}{'median s':>10}{'ms / token':>12}")
    for name, m in med.items():
        print(f"  {name:<30}{m:>10.3f}{m / tokens * 1e3:>12.2f}")
    verdict = "" if target is None else f" (target >= {target:g}x: "
    verdict += "" if target is None else ("met)" if speedup >= target else "NOT met)")
    print(f"  speed-up with the cache: {speedup:.1f}x{verdict}")
    return speedup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--source-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's choice)"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    cfg = TransformerConfig(
        vocab_size=args.vocab,
        d_model=args.d_model,
        n_heads=args.heads,
        d_ff=4 * args.d_model,
        n_layers=args.layers,
        max_len=max(320, args.prompt_len + args.new_tokens, args.source_len),
        dropout=0.0,
        norm_first=True,
        positional="learned",
    )
    print(
        f"greedy decoding of {args.new_tokens} tokens, batch {args.batch}, {args.layers} layers, "
        f"d_model={args.d_model}, h={args.heads}, V={args.vocab}, float32, CPU, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"median of {args.rounds} interleaved rounds"
    )

    gpt = GPT(cfg).eval()
    prompt = torch.randint(5, args.vocab, (args.batch, args.prompt_len))
    gpt_fns = {
        "no cache (recompute prefix)": lambda: generate(
            gpt, prompt, args.new_tokens, use_cache=False
        ),
        "KV cache": lambda: generate(gpt, prompt, args.new_tokens, use_cache=True),
    }
    same = torch.equal(gpt_fns["KV cache"](), gpt_fns["no cache (recompute prefix)"]())
    assert same, "GPT: the cache changed the generated tokens"
    gpt_speedup = report(
        f"GPT, prompt {args.prompt_len} tokens (same tokens both ways: {same})",
        time_rounds(gpt_fns, args.rounds),
        tokens=args.new_tokens,
        target=5.0,
    )

    seq2seq = EncoderDecoder(cfg).eval()
    src = torch.randint(5, args.vocab, (args.batch, args.source_len))

    def translate(use_cache: bool) -> torch.Tensor:
        return greedy_translate(seq2seq, src, BOS, EOS, args.new_tokens, use_cache=use_cache)

    ed_fns = {
        "no cache (recompute prefix)": lambda: translate(False),
        "KV cache": lambda: translate(True),
    }
    a, b = ed_fns["KV cache"](), ed_fns["no cache (recompute prefix)"]()
    assert torch.equal(a, b), "EncoderDecoder: the cache changed the generated tokens"
    report(
        f"EncoderDecoder, source {args.source_len} tokens, {a.shape[1]} target tokens "
        f"(same tokens both ways: True)",
        time_rounds(ed_fns, args.rounds),
        tokens=a.shape[1],
        target=None,
    )
    return 0 if gpt_speedup >= 5.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
