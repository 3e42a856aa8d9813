"""The name tagger chapter 9 reads: chapter 8's character GPT with LoRA adapters and a tag head.

Trains :class:`tfbook.finetune.TokenTagger` on :func:`tfbook.tasks.name_tagging_task` with
low-rank adapters on every attention projection of the pre-trained character GPT
(``tfbook.run.book_run("gpt-char")``), then saves only what was trained, the adapters and the
head (about 140 KiB beside the model's 3 MiB), and a log: the loss of every step, the test F1 of
the names, and the F1 of a rule that tags every capitalised word but a line's first
(:func:`tfbook.tasks.capitalised_words`, the baseline the model has to beat).

A GPT reads left to right, so the tag of character ``t`` is the target of position
``t + delay`` (:func:`tfbook.finetune.encode_tags` with ``shift=delay``): the model has read
``delay`` characters more when it decides. The same training with the other delays of
``--compare-delays`` is run too (not saved), and their test F1 logged.

    python benchmarks/finetune_tagger.py --out tfbook/data/capstone/finetune
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

from tfbook import finetune as ft
from tfbook import tasks
from tfbook.corpus import fetch_shakespeare
from tfbook.run import book_run, load_model

SETTINGS = {
    "run": "gpt-char",
    "train_lines": 4000,
    "test_lines": 500,
    "targets": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "r": 8,
    "alpha": 16,
    "steps": 600,
    "batch_size": 32,
    "lr": 3e-3,
    "seed": 0,
    "delay": 3,
}
COMPARE_DELAYS = (0, 8)


def train(gpt, tokenizer, context, task, settings, delay):
    """The LoRA tagger trained with ``delay``; its losses, seconds and test F1 (and the rule's)."""

    def encode(side):
        ids = ft.encode_texts(tokenizer, [line for line, _ in side], context)
        return ids, ft.encode_tags([tags for _, tags in side], context, shift=delay)

    (x, y), (x_test, y_test) = encode(task.train), encode(task.test)
    torch.manual_seed(settings["seed"])
    body = ft.GPTBody(copy.deepcopy(gpt))
    ft.add_lora(body, settings["targets"], r=settings["r"], alpha=settings["alpha"])
    tagger = ft.TokenTagger(body, len(tasks.TAGS))
    start = time.perf_counter()
    losses = ft.fine_tune(
        tagger,
        x,
        y,
        steps=settings["steps"],
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        seed=settings["seed"],
    )
    seconds = time.perf_counter() - start
    rule = [tasks.capitalised_words(line) for line, _ in task.test]
    rule_f1 = ft.name_f1(ft.encode_tags(rule, context, shift=delay), y_test)
    return tagger, losses, seconds, ft.name_f1(ft.predict(tagger, x_test), y_test), rule_f1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/finetune_tagger.py")
    parser.add_argument("--out", type=Path, required=True, help="folder for tagger.pt and .json")
    parser.add_argument("--steps", type=int, default=SETTINGS["steps"])
    parser.add_argument("--delay", type=int, default=SETTINGS["delay"])
    parser.add_argument("--compare-delays", type=int, nargs="*", default=list(COMPARE_DELAYS))
    args = parser.parse_args(argv)
    settings = dict(SETTINGS, steps=args.steps, delay=args.delay)
    torch.set_num_threads(1)
    gpt, tokenizer, cfg = load_model(book_run(settings["run"]))
    task = tasks.name_tagging_task(
        fetch_shakespeare(),
        train_lines=settings["train_lines"],
        test_lines=settings["test_lines"],
        seed=settings["seed"],
    )
    tagger, losses, seconds, f1, rule_f1 = train(
        gpt, tokenizer, cfg.context, task, settings, settings["delay"]
    )
    trainable, total = ft.trainable_parameters(tagger)
    delay_f1 = {settings["delay"]: f1}
    for delay in args.compare_delays:
        if delay not in delay_f1:
            delay_f1[delay] = train(gpt, tokenizer, cfg.context, task, settings, delay)[3]
            print(f"delay {delay}: test F1 {delay_f1[delay]:.4f}", flush=True)
    log = {
        "settings": settings,
        "trainable": trainable,
        "total": total,
        "losses": [round(v, 5) for v in losses],
        "seconds": round(seconds, 1),
        "threads": 1,
        "test_f1": round(f1, 4),
        "rule_f1": round(rule_f1, 4),
        "delay_f1": {str(d): round(delay_f1[d], 4) for d in sorted(delay_f1)},
        "machine": {"python": platform.python_version(), "torch": torch.__version__},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    state = tagger.state_dict()
    trained = {k: v for k, v in state.items() if "lora_" in k or k.startswith("head.")}
    torch.save(trained, args.out / "tagger.pt")
    (args.out / "tagger.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: log[k] for k in ("seconds", "test_f1", "rule_f1", "delay_f1")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
