"""The value of pre-training, measured: test accuracy against the number of labelled examples.

For each number of labelled passages per group and each seed, the chapter 8 GPT
(``tfbook.run.book_run(RUN)``) is fine-tuned on the First Folio group task
(:func:`tfbook.tasks.genre_task`) three ways, full fine-tuning, a frozen body with a trained head,
and LoRA, and the same architecture from random weights is trained as the baseline. The test
passages come from the held-out plays (one per group), so chance is 1/3. Each record holds the
test accuracy, the seconds of training and the trainable parameters (the optimiser keeps two
AdamW moments per trainable parameter: the memory a way costs beyond the frozen model).

    python benchmarks/finetune_curve.py --json tfbook/data/finetune/curve.json

Timings depend on the machine; the accuracies are what the chapter reads.
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
from tfbook.model import GPT
from tfbook.run import book_run, load_model

RUN = "gpt-bpe"
PER_GROUP = (10, 30, 100, 300)
SEEDS = (0, 1, 2)
LENGTH = 256  # characters per passage; the BPE model's 64 tokens cover about 200 of them
STEPS, BATCH = 150, 32
LORA = {"targets": ("q_proj", "v_proj", "out_proj"), "r": 8, "alpha": 16}
LR = {"full": 3e-4, "frozen": 3e-3, "lora": 3e-3, "scratch": 3e-4}


def _model(way: str, gpt: GPT, seed: int) -> ft.SequenceClassifier:
    torch.manual_seed(seed)
    if way == "scratch":
        return ft.SequenceClassifier(GPT(gpt.cfg), len(tasks.GROUPS), pooling="mean")
    body = ft.GPTBody(copy.deepcopy(gpt))
    if way == "frozen":
        ft.freeze(body)
    elif way == "lora":
        ft.add_lora(body, LORA["targets"], r=LORA["r"], alpha=LORA["alpha"])
    return ft.SequenceClassifier(body, len(tasks.GROUPS), pooling="mean")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/finetune_curve.py")
    parser.add_argument("--json", type=Path, default=None, help="write the records here")
    parser.add_argument("--per-group", type=int, nargs="+", default=list(PER_GROUP))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--ways", nargs="+", default=["full", "frozen", "lora", "scratch"])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    gpt, tokenizer, cfg = load_model(book_run(RUN))
    folder = fetch_shakespeare()
    test = tasks.genre_task(folder, length=LENGTH, train_per_group=1, test_per_group=300).test
    x_test = ft.encode_texts(tokenizer, [t for t, _ in test], cfg.context)
    y_test = torch.tensor([y for _, y in test])
    records = []
    for n in args.per_group:
        for seed in args.seeds:
            train = tasks.genre_task(
                folder, length=LENGTH, train_per_group=n, test_per_group=1, seed=100 + seed
            ).train
            x = ft.encode_texts(tokenizer, [t for t, _ in train], cfg.context)
            y = torch.tensor([label for _, label in train])
            for way in args.ways:
                model = _model(way, gpt, seed)
                trainable, total = ft.trainable_parameters(model)
                start = time.perf_counter()
                losses = ft.fine_tune(
                    model, x, y, steps=STEPS, batch_size=BATCH, lr=LR[way], seed=seed
                )
                seconds = time.perf_counter() - start
                acc = ft.accuracy(model, x_test, y_test)
                record = {
                    "per_group": n,
                    "seed": seed,
                    "way": way,
                    "test_accuracy": round(acc, 4),
                    "train_accuracy": round(ft.accuracy(model, x, y), 4),
                    "final_loss": round(sum(losses[-10:]) / 10, 4),
                    "seconds": round(seconds, 2),
                    "trainable": trainable,
                    "total": total,
                }
                records.append(record)
                print(json.dumps(record), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {
            "run": RUN,
            "task": {"length": LENGTH, "test_per_group": 300, "test_plays": tasks.TEST_PLAYS},
            "steps": STEPS,
            "batch_size": BATCH,
            "lr": LR,
            "lora": {**LORA, "targets": list(LORA["targets"])},
            "machine": {"python": platform.python_version(), "torch": torch.__version__},
            "records": records,
        }
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
