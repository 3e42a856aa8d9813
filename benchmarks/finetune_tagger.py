"""The name tagger chapter 9 reads: chapter 8's character GPT with LoRA adapters and a tag head.

Trains :class:`tfbook.finetune.TokenTagger` on :func:`tfbook.tasks.name_tagging_task` with
low-rank adapters on every attention projection of the pre-trained character GPT
(``tfbook.run.book_run("gpt-char")``), then saves only what was trained, the adapters and the
head (a few hundred kilobytes beside the model's 3 MB), and a log: the loss of every step, the
test F1 of the names, and the F1 of a rule that tags every capitalised word that does not begin
a line (the baseline the model has to beat).

    python benchmarks/finetune_tagger.py --out tfbook/data/capstone/finetune
"""

from __future__ import annotations

import argparse
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
    "train_lines": 2000,
    "test_lines": 500,
    "targets": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "r": 8,
    "alpha": 16,
    "steps": 400,
    "batch_size": 32,
    "lr": 3e-3,
    "seed": 0,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/finetune_tagger.py")
    parser.add_argument("--out", type=Path, required=True, help="folder for tagger.pt and log.json")
    parser.add_argument("--steps", type=int, default=SETTINGS["steps"])
    args = parser.parse_args(argv)
    settings = dict(SETTINGS, steps=args.steps)
    torch.set_num_threads(1)
    gpt, tokenizer, cfg = load_model(book_run(settings["run"]))
    task = tasks.name_tagging_task(
        fetch_shakespeare(),
        train_lines=settings["train_lines"],
        test_lines=settings["test_lines"],
        seed=settings["seed"],
    )

    def encode(side):
        ids = ft.encode_texts(tokenizer, [line for line, _ in side], cfg.context)
        return ids, ft.encode_tags([tags for _, tags in side], cfg.context)

    (x, y), (x_test, y_test) = encode(task.train), encode(task.test)
    torch.manual_seed(settings["seed"])
    body = ft.GPTBody(gpt)
    ft.add_lora(body, settings["targets"], r=settings["r"], alpha=settings["alpha"])
    tagger = ft.TokenTagger(body, len(tasks.TAGS))
    trainable, total = ft.trainable_parameters(tagger)
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
    rule = ft.encode_tags([tasks.capitalised_words(line) for line, _ in task.test], cfg.context)
    log = {
        "settings": settings,
        "trainable": trainable,
        "total": total,
        "losses": [round(v, 5) for v in losses],
        "seconds": round(seconds, 1),
        "threads": 1,
        "test_f1": round(ft.name_f1(ft.predict(tagger, x_test), y_test), 4),
        "rule_f1": round(ft.name_f1(rule, y_test), 4),
        "machine": {"python": platform.python_version(), "torch": torch.__version__},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    trained = {
        k: v for k, v in tagger.state_dict().items() if "lora_" in k or k.startswith("head.")
    }
    torch.save(trained, args.out / "tagger.pt")
    (args.out / "tagger.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: log[k] for k in ("trainable", "total", "seconds", "test_f1", "rule_f1")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
