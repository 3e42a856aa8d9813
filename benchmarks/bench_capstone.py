"""Benchmarks of the capstone (chapter 8): our GPT against Hugging Face's, side by side.

Three measurements, each in one run of this script:

(a) **A training step** (forward, backward, AdamW) of :class:`tfbook.model.GPT` and of
    ``transformers.GPT2LMHeadModel`` with the same configuration and the *same weights*
    (ours is loaded from theirs with ``tfbook.interop.gpt_from_hf``, chapter 6), on the same
    batch, with the same optimizer (``torch.optim.AdamW``, ``fused=True`` for both unless
    ``--optimizer`` says otherwise). The losses of the first step must agree (asserted)
    before anything is timed. Two sizes: the capstone's (V 65, d_model 128, 4 heads, d_ff 512,
    4 layers, context 64, batch 12) and GPT-2 small's width with 2 layers (V 50257, d_model 768,
    12 heads, d_ff 3072, context 64, batch 4). Hugging Face's GPT-2 configuration computes
    its GELU with the written-out tanh formula (``gelu_new``); it is timed that way (GPT-2's
    own setting) and with ``gelu_pytorch_tanh`` (PyTorch's fused kernel, the one ours uses),
    so the ratio that compares like with like is printed too. A fourth contender is our GPT
    with chapter 5's written-out LayerNorm (``written_out_layer_norms``) instead of the fused
    kernel the models use (:class:`tfbook.norm.FusedLayerNorm`), to show what it saves. Two
    more test the premise of the 0.75 target (that a lean GPT beats Hugging Face's general one by
    skipping its overhead): Hugging Face's model with its written-out ("eager") attention
    instead of PyTorch's fused kernel, and :class:`LeanGPT`, GPT-2's arithmetic in the
    fewest lines PyTorch allows (fused QKV, ``scaled_dot_product_attention``, no checks): the
    library's GPT must cost no more than it (ratio <= 1.0, printed with its verdict).
(b) **Greedy generation of 256 tokens** by the capstone-size GPT (positions for 320 tokens):
    with our KV cache, without it (every step re-reads the whole sequence), and by
    ``GPT2LMHeadModel.generate(do_sample=False, use_cache=True)`` with the same weights. The
    three must produce the same tokens (asserted).
(c) **Peak memory** (resident set size) of the capstone's training run: a few hundred steps
    of the character-level Shakespeare run (:func:`tfbook.run.run_gpt`) in a child process,
    whose ``ru_maxrss`` is read when it ends (and compared with the ``peak_rss_mib`` of the
    run's own log). Needs the corpus (``make corpus``); skipped with a message otherwise.

Contenders are timed in interleaved rounds (one call of each per round, after warm-up
calls) and the median of the rounds is reported. ``--json PATH`` also writes every figure
and the machine (CPU model, cores, torch threads, torch and transformers versions, date,
load average before and after) to a JSON file for the chapter's "measured on" table.

Run ``python benchmarks/bench_capstone.py --help``. On a machine shared with other jobs the
figures move by 10-20% from run to run; the load average is recorded so a reader can judge.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from tfbook.generate import generate
from tfbook.interop import gpt_from_hf
from tfbook.model import written_out_layer_norms

SIZES = {
    "capstone": dict(
        vocab_size=65, n_embd=128, n_head=4, n_inner=512, n_layer=4, n_positions=64, batch=12
    ),
    "gpt2-small-width-2-layers": dict(
        vocab_size=50257, n_embd=768, n_head=12, n_inner=3072, n_layer=2, n_positions=64, batch=4
    ),
}
TARGET_STEP_RATIO = 0.75  # the first target: ours / Hugging Face's step time
TARGET_LEAN_RATIO = 1.0  # ours / the lean GPT with the same arithmetic: no cost for the library
TARGET_CACHE_SPEEDUP = 5.0


# ------------------------------------------------------------------------------- helpers


def machine_info() -> dict:
    """CPU model, cores, torch threads, versions, date and load average."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import transformers

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "loadavg_before": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def time_rounds(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 2) -> dict:
    """Seconds per call of each function: ``warmup`` calls each, then interleaved rounds."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def hf_gpt2(size: dict, activation: str, seed: int = 0, attention: str = "sdpa"):
    """A ``GPT2LMHeadModel`` with random weights, dropout 0 (no network needed).

    ``attention`` is Hugging Face's ``attn_implementation``: ``"sdpa"`` (PyTorch's fused
    attention, the default of this transformers version) or ``"eager"`` (written out)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=size["vocab_size"],
        n_embd=size["n_embd"],
        n_head=size["n_head"],
        n_inner=size["n_inner"],
        n_layer=size["n_layer"],
        n_positions=size["n_positions"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        activation_function=activation,
        bos_token_id=None,  # GPT-2's 50256 is outside a small vocabulary
        eos_token_id=None,
        pad_token_id=None,
        attn_implementation=attention,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(cfg)


class LeanBlock(torch.nn.Module):
    """A pre-norm GPT block in as few lines as PyTorch allows: one fused QKV projection,
    ``F.scaled_dot_product_attention(is_causal=True)``, PyTorch's tanh GELU. The same
    arithmetic as GPT-2's block; it exists to test how much a lean model can save."""

    def __init__(self, d_model: int, n_head: int, d_ff: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln_1 = torch.nn.LayerNorm(d_model)
        self.qkv = torch.nn.Linear(d_model, 3 * d_model)
        self.proj = torch.nn.Linear(d_model, d_model)
        self.ln_2 = torch.nn.LayerNorm(d_model)
        self.fc = torch.nn.Linear(d_model, d_ff)
        self.fc_out = torch.nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(self.ln_1(x)).view(b, t, 3, self.n_head, d // self.n_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, h, T, d_head)
        heads = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(heads.transpose(1, 2).reshape(b, t, d))
        return x + self.fc_out(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


class LeanGPT(torch.nn.Module):
    """GPT-2's architecture with nothing else: no masks, caches, checks or options."""

    def __init__(self, size: dict) -> None:
        super().__init__()
        d = size["n_embd"]
        self.wte = torch.nn.Embedding(size["vocab_size"], d)
        self.wpe = torch.nn.Embedding(size["n_positions"], d)
        self.blocks = torch.nn.ModuleList(
            LeanBlock(d, size["n_head"], size["n_inner"]) for _ in range(size["n_layer"])
        )
        self.ln_f = torch.nn.LayerNorm(d)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T  # the output layer shares the embedding

    @classmethod
    def from_hf(cls, hf: torch.nn.Module, size: dict) -> LeanGPT:
        """GPT-2's weights; its ``Conv1D`` layers store (in, out), ``nn.Linear`` (out, in)."""
        model = cls(size)
        sd = hf.state_dict()
        state = {name: sd[f"transformer.{name}"] for name in ("wte.weight", "wpe.weight")}
        state |= {f"ln_f.{p}": sd[f"transformer.ln_f.{p}"] for p in ("weight", "bias")}
        names = {"ln_1": "ln_1", "ln_2": "ln_2", "qkv": "attn.c_attn", "proj": "attn.c_proj"}
        names |= {"fc": "mlp.c_fc", "fc_out": "mlp.c_proj"}
        for i in range(size["n_layer"]):
            for ours, theirs in names.items():
                w = sd[f"transformer.h.{i}.{theirs}.weight"]
                state[f"blocks.{i}.{ours}.weight"] = w if ours.startswith("ln") else w.T
                state[f"blocks.{i}.{ours}.bias"] = sd[f"transformer.h.{i}.{theirs}.bias"]
        model.load_state_dict({k: v.clone() for k, v in state.items()})
        return model


def make_optimizer(model: torch.nn.Module, kind: str) -> torch.optim.AdamW:
    options = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {}}[kind]
    return torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01, **options)


# --------------------------------------------------------------------- (a) training step


def bench_train_step(name: str, size: dict, rounds: int, optimizer: str) -> dict:
    b, t = size["batch"], size["n_positions"]
    hf_new = hf_gpt2(size, "gelu_new").train()  # GPT-2's own setting
    hf_fused = hf_gpt2(size, "gelu_pytorch_tanh").train()
    hf_fused.load_state_dict(hf_new.state_dict())  # the same weights for every contender
    hf_eager = hf_gpt2(size, "gelu_new", attention="eager").train()
    hf_eager.load_state_dict(hf_new.state_dict())
    ours = gpt_from_hf(hf_new).train()  # the library's GPT as it is (fused LayerNorm)
    explicit = written_out_layer_norms(gpt_from_hf(hf_new)).train()  # chapter 5's formula
    lean = LeanGPT.from_hf(hf_new, size).train()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, size["vocab_size"], (b, t), generator=g)  # (B, T)
    y = torch.randint(0, size["vocab_size"], (b, t), generator=g)  # (B, T): the targets

    def loss_of(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())  # mean over B * T

    forwards = {
        "ours (tfbook.GPT)": lambda: ours(x),
        "ours, explicit LayerNorm": lambda: explicit(x),
        "HF GPT2LMHeadModel, gelu_new": lambda: hf_new(input_ids=x).logits,
        "HF GPT2LMHeadModel, gelu_pytorch_tanh": lambda: hf_fused(input_ids=x).logits,
        "HF GPT2LMHeadModel, eager attention": lambda: hf_eager(input_ids=x).logits,
        "lean GPT (fewest lines)": lambda: lean(x),
    }
    first = {k: loss_of(f()).item() for k, f in forwards.items()}
    ref = first["HF GPT2LMHeadModel, gelu_new"]
    for k, v in first.items():
        assert abs(v - ref) <= 1e-5 * abs(ref), f"{name}: first-step loss of {k} {v} != {ref}"

    models = {"ours (tfbook.GPT)": ours, "ours, explicit LayerNorm": explicit}
    models |= {"HF GPT2LMHeadModel, gelu_new": hf_new}
    models |= {"HF GPT2LMHeadModel, gelu_pytorch_tanh": hf_fused}
    models |= {"HF GPT2LMHeadModel, eager attention": hf_eager, "lean GPT (fewest lines)": lean}
    optimizers = {k: make_optimizer(m, optimizer) for k, m in models.items()}

    def step_fn(key: str) -> Callable[[], None]:
        def step() -> None:
            loss = loss_of(forwards[key]())
            optimizers[key].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[key].step()

        return step

    times = time_rounds({k: step_fn(k) for k in models}, rounds)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    ours_ms = med["ours (tfbook.GPT)"]
    ratios = {k: ours_ms / v for k, v in med.items() if k != "ours (tfbook.GPT)"}
    params = sum(p.numel() for p in ours.parameters())
    print(
        f"(a) training step, {name}: V={size['vocab_size']} d_model={size['n_embd']} "
        f"h={size['n_head']} d_ff={size['n_inner']} layers={size['n_layer']} T={t} B={b}, "
        f"{params:,} parameters, AdamW ({optimizer}), median of {rounds} rounds"
    )
    print(f"    first-step losses agree: {first}")
    for k, v in med.items():
        print(f"    {k:<40}{v:9.1f} ms/step")
    for k, r in ratios.items():
        if k.startswith("HF"):
            verdict = "met" if r <= TARGET_STEP_RATIO else "NOT met"
            print(f"    ratio ours / {k}: {r:.3f} (target <= {TARGET_STEP_RATIO}: {verdict})")
        elif k.startswith("lean"):
            verdict = "met" if r <= TARGET_LEAN_RATIO else "NOT met"
            print(
                f"    ratio ours / {k}: {r:.3f} (what our checks and options cost; "
                f"target <= {TARGET_LEAN_RATIO}: {verdict})"
            )
        else:
            print(f"    ratio ours / {k}: {r:.3f} (what the fused LayerNorm saves)")
    return {
        "size": name,
        "config": size,
        "parameters": params,
        "optimizer": f"AdamW ({optimizer})",
        "rounds": rounds,
        "first_step_loss": first,
        "ms_per_step": med,
        "ratio_ours_over": ratios,
        "target_ratio": TARGET_STEP_RATIO,
        "target_ratio_lean": TARGET_LEAN_RATIO,
    }


# ----------------------------------------------------------------------------- (b) generation


def bench_generation(rounds: int, new_tokens: int, batch: int, prompt_len: int) -> dict:
    size = dict(SIZES["capstone"], n_positions=prompt_len + new_tokens + 64)
    hf = hf_gpt2(size, "gelu_pytorch_tanh", seed=2).eval()
    with torch.no_grad():  # spread the logits, so no two tokens are near a tie
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ours = gpt_from_hf(hf).eval()
    g = torch.Generator().manual_seed(3)
    prompt = torch.randint(0, size["vocab_size"], (batch, prompt_len), generator=g)

    def hf_generate() -> torch.Tensor:
        with torch.no_grad():
            return hf.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=False,
                use_cache=True,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                eos_token_id=None,
                pad_token_id=0,
            )

    fns = {
        "ours, KV cache": lambda: generate(ours, prompt, new_tokens, use_cache=True),
        "ours, no cache (recompute)": lambda: generate(ours, prompt, new_tokens, use_cache=False),
        "HF generate(use_cache=True)": hf_generate,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # HF's notes on generation defaults
        outputs = {k: f() for k, f in fns.items()}
        ref = outputs["ours, KV cache"]
        for k, out in outputs.items():
            assert torch.equal(out, ref), f"generation: {k} produced other tokens"
        times = time_rounds(fns, rounds, warmup=1)
    med = {k: statistics.median(v) for k, v in times.items()}
    tokens = batch * new_tokens
    tps = {k: tokens / v for k, v in med.items()}
    speedup = med["ours, no cache (recompute)"] / med["ours, KV cache"]
    vs_hf = med["HF generate(use_cache=True)"] / med["ours, KV cache"]
    print(
        f"(b) greedy generation of {new_tokens} tokens, batch {batch}, prompt {prompt_len}, "
        f"capstone size, median of {rounds} rounds (same tokens all three ways: True)"
    )
    for k in fns:
        print(f"    {k:<32}{med[k]:8.3f} s {tps[k]:9.0f} tokens/s")
    verdict = "met" if speedup >= TARGET_CACHE_SPEEDUP else "NOT met"
    print(f"    KV cache speed-up over recomputation: {speedup:.1f}x (target >= 5x: {verdict})")
    print(f"    HF generate time / ours with the cache: {vs_hf:.2f}")
    return {
        "new_tokens": new_tokens,
        "batch": batch,
        "prompt_len": prompt_len,
        "rounds": rounds,
        "seconds": med,
        "tokens_per_second": tps,
        "cache_speedup": speedup,
        "hf_over_ours_time": vs_hf,
        "same_tokens": True,
    }


# ---------------------------------------------------------------------------------- (c) memory

_CHILD = """
import json, sys
import torch
from tfbook.run import GPTRunConfig, run_gpt
torch.set_num_threads({threads})
cfg = GPTRunConfig(tokenizer="char", steps={steps}, warmup={warmup}, eval_every={steps},
                   checkpoint_every={steps}, sample_tokens=0)
run_gpt(cfg, sys.argv[1], overwrite=True, progress=False)
"""


def bench_memory(steps: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="tfbook-bench-") as tmp:
        code = _CHILD.format(steps=steps, warmup=min(100, steps), threads=threads)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", code, tmp], capture_output=True, text=True, check=False
        )
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            print(f"(c) peak memory: skipped, the training run failed: {' | '.join(tail)}")
            return {"skipped": True, "reason": " | ".join(tail)}
        rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        logged = None
        log = Path(tmp) / "log.jsonl"
        if log.exists():
            for line in log.read_text().splitlines():
                row = json.loads(line)
                if row.get("done"):
                    logged = row.get("peak_rss_mib")
    print(
        f"(c) peak memory of the capstone training run ({steps} steps, char tokenizer, "
        f"{threads} thread(s), {seconds:.0f} s in all): ru_maxrss {rss_mib:.0f} MiB"
        + ("" if logged is None else f"; the run's own log says {logged:.0f} MiB")
    )
    return {"steps": steps, "threads": threads, "peak_rss_mib": rss_mib, "logged_mib": logged}


# -------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds (training step)")
    parser.add_argument("--gen-rounds", type=int, default=3, help="timed rounds (generation)")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--gen-batch", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--memory-steps", type=int, default=300)
    parser.add_argument(
        "--optimizer", choices=("fused", "foreach", "for-loop"), default="fused",
        help="AdamW implementation, the same for every contender",
    )  # fmt: skip
    parser.add_argument("--skip", nargs="*", default=[], choices=("step", "generation", "memory"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    results: dict = {"machine": machine_info()}
    m = results["machine"]
    print(
        f"machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, "
        f"torch {m['torch']}, transformers {m['transformers']}, load {m['loadavg_before']}"
    )
    ok = True
    if "memory" not in args.skip:  # first: a child started by a large parent inherits its peak
        results["memory"] = bench_memory(args.memory_steps, torch.get_num_threads())
    if "step" not in args.skip:
        results["train_step"] = [
            bench_train_step(name, size, args.rounds, args.optimizer)
            for name, size in SIZES.items()
        ]
    if "generation" not in args.skip:
        gen = bench_generation(args.gen_rounds, args.new_tokens, args.gen_batch, args.prompt_len)
        results["generation"] = gen
        ok &= gen["cache_speedup"] >= TARGET_CACHE_SPEEDUP
    results["machine"]["loadavg_after"] = _loadavg()
    print(f"load average after: {results['machine']['loadavg_after']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        print(f"results written to {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
