"""The value of pre-training and the cost of each way of fine-tuning, measured (chapter 9).

The task is name tagging (:func:`tfbook.tasks.name_tagging_task`): every character of a spoken
line is tagged as part of one of the play's character names or not, and the score is the F1 of
the name characters on 400 lines of the held-out plays (:func:`tfbook.finetune.name_f1`). The
body is chapter 8's character GPT (``tfbook.run.book_run("gpt-char")``), whose tokens are the
characters the tags belong to.

Why this task and not the First Folio group of a passage (:func:`tfbook.tasks.genre_task`):
the group task is tested on one play per group, so its accuracy moves with how typical three
plays are, and every model, pre-trained or not, stays close to chance (1/3): earlier runs gave
0.40 to 0.44 after pre-training and 0.34 to 0.36 from scratch, a gap of the size of the
seed-to-seed spread. The tagging task is scored on 400 lines and thousands of characters and
separates the two clearly at small label counts. Taking more test plays for the group task
would test on plays the GPT read in pre-training.

Two parts, written to one JSON file (``make capstone``):

- ``curve``: for each number of labelled lines in :data:`COUNTS` and each seed, the pre-trained
  GPT fine-tuned in full against the same architecture trained from random weights, with the
  same steps, batch and data.
- ``cost``: at :data:`COST_COUNT` lines, full fine-tuning, a frozen body with a trained head,
  and LoRA on the attention projections (and from scratch): test F1, trainable parameters,
  seconds per step, and the bytes training needs beyond the model: a gradient and two AdamW
  moments per trainable parameter (float32), plus the activations autograd keeps for the
  backward pass of a batch of 16 full-length lines (:func:`tfbook.finetune.saved_activation_bytes`).

Two references that need no training are stored with them: tagging every character as a name,
and the rule "a capitalised word that is not the line's first word is a name"
(:func:`tfbook.tasks.capitalised_words`).

    python benchmarks/finetune_curve.py --json tfbook/data/capstone/finetune/curve.json

Timings depend on the machine and its load (the file records the thread count and the load
average); the F1 scores are what the chapter reads.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from tfbook import finetune as ft
from tfbook import tasks
from tfbook.corpus import fetch_shakespeare
from tfbook.model import GPT
from tfbook.run import book_run, load_model

RUN = "gpt-char"
COUNTS = (25, 100, 400)  # labelled training lines
COST_COUNT = 400
SEEDS = (0, 1, 2)
TEST_LINES, TEST_SEED = 400, 0
STEPS, BATCH = 120, 16
LORA = {"targets": ("q_proj", "v_proj", "out_proj"), "r": 8, "alpha": 16}
LR = {"full": 3e-4, "frozen": 3e-3, "lora": 3e-3, "scratch": 3e-4}
WAYS = ("full", "frozen", "lora", "scratch")


def build(way: str, gpt: GPT, seed: int) -> ft.TokenTagger:
    """The tagger of one way; the head (and LoRA's ``A``, or the scratch body) from ``seed``."""
    torch.manual_seed(seed)
    if way == "scratch":
        return ft.TokenTagger(GPT(gpt.cfg), len(tasks.TAGS))
    body = ft.GPTBody(copy.deepcopy(gpt))
    if way == "frozen":
        ft.freeze(body)
    elif way == "lora":
        ft.add_lora(body, LORA["targets"], r=LORA["r"], alpha=LORA["alpha"])
    return ft.TokenTagger(body, len(tasks.TAGS))


def test_split(folder) -> tasks.TaskSplit:
    """The split whose test lines every run is scored on (the same whatever the counts)."""
    return tasks.name_tagging_task(folder, train_lines=1, test_lines=TEST_LINES, seed=TEST_SEED)


def full_batch(tokenizer, length: int) -> torch.Tensor:
    """A batch of :data:`BATCH` lines of ``length`` characters (spaces): the largest batch."""
    return torch.full((BATCH, length), tokenizer.encode(" ")[0], dtype=torch.long)


def _encode(tokenizer, side, length):
    ids = ft.encode_texts(tokenizer, [line for line, _ in side], length)
    return ids, ft.encode_tags([tags for _, tags in side], length)


def _train_and_score(way, gpt, seed, x, y, x_test, y_test, steps):
    model = build(way, gpt, seed)
    trainable, total = ft.trainable_parameters(model)
    start = time.perf_counter()
    losses = ft.fine_tune(model, x, y, steps=steps, batch_size=BATCH, lr=LR[way], seed=seed)
    seconds = time.perf_counter() - start
    record = {
        "way": way,
        "seed": seed,
        "test_f1": round(ft.name_f1(ft.predict(model, x_test), y_test), 4),
        "test_accuracy": round(ft.accuracy(model, x_test, y_test), 4),
        "train_f1": round(ft.name_f1(ft.predict(model, x), y), 4),
        "final_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4),
        "seconds_per_step": round(seconds / steps, 4),
        "trainable": trainable,
        "total": total,
    }
    return model, record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/finetune_curve.py")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--counts", type=int, nargs="+", default=list(COUNTS))
    parser.add_argument("--cost-count", type=int, default=COST_COUNT)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads(N)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tick = time.perf_counter()
    load_before = os.getloadavg()[0]
    gpt, tokenizer, cfg = load_model(book_run(RUN))
    length = cfg.context
    folder = fetch_shakespeare()
    split = test_split(folder)
    x_test, y_test = _encode(tokenizer, split.test, length)
    rule = [tasks.capitalised_words(line) for line, _ in split.test]
    references = {
        "every_character": round(ft.name_f1(torch.ones_like(y_test), y_test), 4),
        "capital_rule": round(ft.name_f1(ft.encode_tags(rule, length), y_test), 4),
    }
    curve, cost = [], []
    counts = sorted(set(args.counts) | {args.cost_count})
    for n in counts:
        for seed in args.seeds:
            train = tasks.name_tagging_task(
                folder, train_lines=n, test_lines=TEST_LINES, seed=100 + seed
            ).train
            x, y = _encode(tokenizer, train, length)
            ways = ["full", "scratch"] if n in args.counts else []
            if n == args.cost_count:
                ways = list(WAYS)
            for way in ways:
                model, record = _train_and_score(way, gpt, seed, x, y, x_test, y_test, args.steps)
                record = {"train_lines": n, **record}
                print(json.dumps(record), flush=True)
                if n in args.counts and way in ("full", "scratch"):
                    curve.append(record)
                if n == args.cost_count:
                    b = 4  # bytes per float32
                    cost.append(
                        record
                        | {
                            "weight_bytes": record["total"] * b,
                            "gradient_bytes": record["trainable"] * b,
                            "adamw_state_bytes": 2 * record["trainable"] * b,
                            "activation_bytes": ft.saved_activation_bytes(
                                model, full_batch(tokenizer, length)
                            ),
                        }
                    )
    seconds = time.perf_counter() - tick
    print(f"finetune curve: {seconds:.0f} s", file=sys.stderr)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {
            "run": RUN,
            "task": {
                "name": "name tagging",
                "score": "F1 of the name characters on the test lines",
                "why": (
                    "The First Folio group task is tested on one play per group and stays "
                    "near chance (1/3) for every model; name tagging is scored on thousands of "
                    "characters of 400 held-out lines and separates pre-trained from scratch."
                ),
                "train_lines": sorted(set(args.counts)),
                "test_lines": TEST_LINES,
                "test_seed": TEST_SEED,
                "train_seeds": [100 + s for s in args.seeds],
                "test_plays": list(split.test_plays),
                "length": length,
            },
            "references": references,
            "steps": args.steps,
            "batch_size": BATCH,
            "lr": LR,
            "lora": {**LORA, "targets": list(LORA["targets"])},
            "cost_count": args.cost_count,
            "curve": curve,
            "cost": cost,
            "machine": {
                "threads": args.threads,
                "load_average_before": round(load_before, 2),
                "load_average_after": round(os.getloadavg()[0], 2),
                "seconds": round(seconds, 1),
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "note": (
                    "seconds per step measured on a shared machine under the load shown; "
                    "compare the ways with each other, not with another machine"
                ),
            },
        }
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
