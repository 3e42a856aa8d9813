"""The capstone's training run (tfbook.run): config, exact resume, signals, damaged checkpoints,
missing corpus, two processes under torchrun, and the committed log reproduced from scratch.

A tiny model on a tiny generated corpus keeps every run here to a fraction of a second of
training; the processes started (the CLI, torchrun) cost most of the file's time.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tfbook.corpus import CorpusError, corpus_folder
from tfbook.run import (
    CHECKPOINT,
    PREVIOUS_CHECKPOINT,
    CheckpointError,
    GPTRunConfig,
    global_batch,
    load_checkpoint,
    load_model,
    read_log,
    run_gpt,
    sample_text,
)
from tfbook.run.distributed import StopSignal, rank_slice
from tfbook_tools.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "tfbook" / "data" / "capstone" / "gpt-char"
VALIDATION = ("macbeth", "twelfth_night", "richard_ii")

TINY = dict(
    n_layers=1,
    n_heads=2,
    d_model=16,
    d_ff=32,
    context=16,
    batch_size=4,
    warmup=2,
    eval_every=3,
    eval_batches=2,
    checkpoint_every=2,
    sample_tokens=10,
)


def tiny(**changes) -> GPTRunConfig:
    return GPTRunConfig(**{**TINY, "steps": 6, **changes})


def tiny_flags(cfg: GPTRunConfig) -> list[str]:
    """The CLI flags that make ``tfbook train gpt`` run ``cfg``."""
    return [
        arg
        for key, value in cfg.to_dict().items()
        if key != "sample_prompt" and value is not None
        for arg in ("--" + key.replace("_", "-"), str(value))
    ]


def make_corpus(folder: Path, lines: dict[str, int] | None = None) -> Path:
    """A corpus folder as tfbook.corpus writes it: random sentences, two training plays."""
    lines = lines or {"hamlet": 150, "othello": 150, **dict.fromkeys(VALIDATION, 20)}
    words = "to be or not that is the question whether tis nobler in the mind".split()
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    works = {}
    for name, n in lines.items():
        text = "".join(
            " ".join(rng.choice(words) for _ in range(rng.randint(4, 10))).capitalize() + ".\n"
            for _ in range(n)
        )
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
        works[name] = len(text)
    manifest = {"works": works, "characters": sum(works.values())}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus") / "shakespeare")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine threads that wait for
    each other cost seconds per step."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def losses(rows) -> list[float]:
    return [r["loss"] for r in rows if "loss" in r]


def steps_of(rows) -> list[int]:
    return [r["step"] for r in rows if "loss" in r]


def env(**extra) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**out, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


# -------------------------------------------------------------------------------- config


def test_config_rejects_bad_values_naming_the_field():
    cases = [
        (dict(tokenizer="word"), "tokenizer must be one of"),
        (dict(d_model=130, n_heads=4), "d_model must be divisible by n_heads"),
        (dict(warmup=300, steps=200), "warmup must be at most steps=200, got 300"),
        (dict(min_lr=0.1, lr=0.01), "min_lr must be a float in"),
        (dict(batch_size=0), "batch_size must be a positive int"),
        (dict(clip=-1.0), "clip must be a float > 0"),
        (dict(dropout=1.0), "dropout must be a float in"),
        (dict(sample_prompt=""), "sample_prompt must be a non-empty str"),
    ]
    for changes, message in cases:
        with pytest.raises((TypeError, ValueError), match=message):
            GPTRunConfig(**changes)


def test_config_json_round_trip_and_unknown_fields():
    cfg = GPTRunConfig(tokenizer="bpe", bpe_train_chars=1000, clip=None, seed=7)
    assert GPTRunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match=r"unknown GPTRunConfig fields \['d_modle'\]"):
        GPTRunConfig.from_dict({"d_modle": 64})


# ---------------------------------------------------------------------------- data order


def test_batches_are_a_function_of_seed_and_step_and_ranks_split_them():
    ids = torch.arange(5000)
    x7, y7 = global_batch(ids, 16, 8, seed=3, step=7)
    assert torch.equal(x7, global_batch(ids, 16, 8, seed=3, step=7)[0])
    assert not torch.equal(x7, global_batch(ids, 16, 8, seed=3, step=8)[0])
    assert not torch.equal(x7, global_batch(ids, 16, 8, seed=4, step=7)[0])
    assert torch.equal(y7[:, :-1], x7[:, 1:])  # targets: the inputs shifted by one
    parts = [rank_slice(x7, r, 4) for r in range(4)]
    assert torch.equal(torch.cat(parts), x7)  # W ranks' slices are the global batch


# ------------------------------------------------------------------------- the run, resume


def test_a_run_writes_its_files_and_a_complete_log(tmp_path, corpus):
    result = run_gpt(tiny(), tmp_path / "run", corpus_dir=corpus, progress=False)
    run = tmp_path / "run"
    names = {"config.json", "log.jsonl", "tokenizer.json", CHECKPOINT, PREVIOUS_CHECKPOINT}
    assert {p.name for p in run.iterdir()} == names | {"samples.txt", "model.pt"}
    rows = read_log(run / "log.jsonl")
    assert rows == result.log
    assert steps_of(rows) == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows if "val_loss" in r] == [3, 6]
    done = rows[-1]
    assert done["done"] is True and done["final_val_loss"] == result.final_val_loss
    assert 10 < done["peak_rss_mib"] < 100_000  # MiB (ru_maxrss is KiB on Linux)
    assert GPTRunConfig.from_dict(json.loads((run / "config.json").read_text())) == tiny()
    assert load_checkpoint(run / CHECKPOINT)["step"] == 6
    assert load_checkpoint(run / PREVIOUS_CHECKPOINT)["step"] == 4  # checkpoint_every=2
    model, tokenizer, cfg = load_model(run)
    x = torch.tensor([tokenizer.encode("to be or not")])
    assert torch.equal(model(x), result.model(x)) and cfg == tiny()
    assert result.samples.startswith("\n") and len(tokenizer.encode(result.samples)) == 11
    assert (run / "samples.txt").read_text(encoding="utf-8") == result.samples


def test_samples_along_training_leave_the_losses_unchanged(tmp_path, corpus):
    plain = run_gpt(tiny(), tmp_path / "plain", corpus_dir=corpus, progress=False)
    sampled = run_gpt(tiny(sample_every=2), tmp_path / "sampled", corpus_dir=corpus, progress=False)
    assert sampled.losses == plain.losses and sampled.val_losses == plain.val_losses
    samples = [r for r in read_log(tmp_path / "sampled" / "log.jsonl") if "sample" in r]
    assert [r["step"] for r in samples] == [0, 2, 4, 6]
    assert all(r["sample"].startswith("\n") and len(r["sample"]) == 11 for r in samples)
    cfg = sampled.config  # the last sample is the trained model's, from the run's seed
    again = sample_text(sampled.model, sampled.tokenizer, cfg.sample_prompt, cfg.sample_tokens,
                        temperature=cfg.sample_temperature,
                        generator=torch.Generator().manual_seed(cfg.seed))  # fmt: skip
    assert samples[-1]["sample"] == again
    assert not any("sample" in r for r in plain.log)


def test_resume_gives_exactly_the_losses_of_an_uninterrupted_run(tmp_path, corpus):
    cfg = tiny(dropout=0.1)  # dropout too: its masks are seeded per step, not carried over
    whole = run_gpt(cfg, tmp_path / "whole", corpus_dir=corpus, progress=False)
    first = run_gpt(cfg, tmp_path / "parts", corpus_dir=corpus, progress=False, stop_after=3)
    assert first.stopped == "stop_after" and first.step == 3 and first.exit_code == 0
    rest = run_gpt(cfg, tmp_path / "parts", corpus_dir=corpus, progress=False, resume=True)
    assert rest.losses == whole.losses  # exact: the same floats, step for step
    assert rest.val_losses == whole.val_losses
    rows = read_log(tmp_path / "parts" / "log.jsonl")
    assert steps_of(rows) == [1, 2, 3, 4, 5, 6]  # no step twice
    assert [r["session"]["start_step"] for r in rows if "session" in r] == [0, 3]


def test_an_existing_run_is_never_replaced_by_accident(tmp_path, corpus):
    run = tmp_path / "run"
    run_gpt(tiny(steps=2), run, corpus_dir=corpus, progress=False)
    before = (run / "log.jsonl").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a run.*--resume.*--overwrite"):
        run_gpt(tiny(steps=2), run, corpus_dir=corpus, progress=False)
    assert (run / "log.jsonl").read_bytes() == before
    with pytest.raises(CorpusError):  # overwrite replaces the run only once the new one can start
        run_gpt(tiny(steps=2), run, corpus_dir=tmp_path / "nowhere", overwrite=True, progress=False)
    assert (run / "log.jsonl").read_bytes() == before
    (run / CHECKPOINT).unlink()
    (run / PREVIOUS_CHECKPOINT).unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="no checkpoint in .* but it holds a run"):
        run_gpt(tiny(steps=2), run, corpus_dir=corpus, progress=False, resume=True)
    assert (run / "log.jsonl").read_bytes() == before


def test_batch_size_must_split_evenly_over_the_processes(tmp_path, corpus, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="batch_size must be divisible by .* WORLD_SIZE=3"):
        run_gpt(tiny(batch_size=4), tmp_path / "run", corpus_dir=corpus, progress=False)


# ------------------------------------------------------------------- damaged checkpoints


@pytest.fixture
def checkpointed(tmp_path, corpus) -> Path:
    """A run stopped after step 4: checkpoint.pt at step 4, checkpoint.prev.pt at step 2."""
    run = tmp_path / "run"
    run_gpt(tiny(), run, corpus_dir=corpus, progress=False, stop_after=4)
    return run


def test_a_truncated_checkpoint_is_named_and_the_previous_one_kept(checkpointed):
    newest, prev = checkpointed / CHECKPOINT, checkpointed / PREVIOUS_CHECKPOINT
    good = prev.read_bytes()
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt is truncated or corrupt") as err:
        load_checkpoint(newest, tiny())
    assert "checkpoint.prev.pt is kept untouched" in str(err.value)
    assert err.value.reason == "corrupt" and prev.read_bytes() == good


def test_garbage_and_foreign_files_are_refused(checkpointed):
    newest = checkpointed / CHECKPOINT
    newest.write_bytes(b"\x00garbage, not a checkpoint" * 100)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(newest)
    torch.save({"weights": torch.zeros(3)}, newest)  # a valid torch file of something else
    with pytest.raises(CheckpointError, match="not a checkpoint of tfbook.run"):
        load_checkpoint(newest)
    with pytest.raises(CheckpointError, match="no checkpoint at .*nowhere.pt") as err:
        load_checkpoint(checkpointed / "nowhere.pt")
    assert err.value.reason == "missing"


def test_a_checkpoint_of_another_config_or_format_is_refused(checkpointed, corpus):
    newest = checkpointed / CHECKPOINT
    before = {p.name: p.read_bytes() for p in checkpointed.iterdir()}
    other = tiny(d_model=32, lr=0.002)
    with pytest.raises(CheckpointError, match="another configuration") as err:
        run_gpt(other, checkpointed, corpus_dir=corpus, progress=False, resume=True)
    assert "checkpoint has d_model=16, this run asks for d_model=32" in str(err.value)
    assert "checkpoint has lr=0.001, this run asks for lr=0.002" in str(err.value)
    assert {p.name: p.read_bytes() for p in checkpointed.iterdir()} == before  # nothing touched
    state = load_checkpoint(newest)
    torch.save({**state, "format": 99}, newest)
    with pytest.raises(CheckpointError, match="has checkpoint format 99, this tfbook reads"):
        run_gpt(tiny(), checkpointed, corpus_dir=corpus, progress=False, resume=True)


def test_resume_falls_back_to_the_previous_checkpoint(checkpointed, corpus, capsys, tmp_path):
    whole = run_gpt(tiny(), tmp_path / "whole", corpus_dir=corpus, progress=False)
    newest = checkpointed / CHECKPOINT
    damaged = newest.read_bytes()[:1000]
    newest.write_bytes(damaged)
    result = run_gpt(tiny(), checkpointed, corpus_dir=corpus, progress=False, resume=True)
    err = capsys.readouterr().err
    assert "warning:" in err and "Resuming from the previous checkpoint" in err and "step 2" in err
    assert result.losses == whole.losses  # steps 3 and 4 are trained again, identically
    assert steps_of(read_log(checkpointed / "log.jsonl")) == [1, 2, 3, 4, 5, 6]
    (kept,) = checkpointed.glob("checkpoint.corrupt.*.pt")  # set aside, not deleted
    assert kept.read_bytes() == damaged


# ------------------------------------------------------------------------------- corpus


def test_a_missing_or_empty_corpus_says_what_to_do(tmp_path):
    with pytest.raises(CorpusError, match=r"nowhere has no manifest.json.*make corpus"):
        run_gpt(tiny(), tmp_path / "run", corpus_dir=tmp_path / "nowhere", progress=False)
    folder = make_corpus(tmp_path / "empty")
    (folder / "hamlet.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"hamlet.txt is empty.*make corpus"):
        run_gpt(tiny(), tmp_path / "run", corpus_dir=folder, progress=False)
    short = make_corpus(tmp_path / "short")
    for name in VALIDATION:  # 3 x 5 characters: not one window of 64
        (short / f"{name}.txt").write_text("Aye.\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"validation text of .*short.* too short for context"):
        run_gpt(tiny(context=64), tmp_path / "run", corpus_dir=short, progress=False)
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def test_the_cli_reports_errors_in_one_line(tmp_path, capsys):
    code = cli(["train", "gpt", "--out", str(tmp_path / "run"), "--corpus", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("tfbook train gpt:") and "make corpus" in err
    code = cli(["train", "gpt", "--out", str(tmp_path / "run"), "--d-model", "30"])
    assert code == 1 and "d_model must be divisible by n_heads" in capsys.readouterr().err


def test_the_cli_passes_its_flags_to_the_numbers_run(tmp_path):
    args = ["--steps", "5", "--warmup", "1", "--n-train", "1000", "--n-test", "100"]
    args += ["--d-model", "16", "--d-ff", "32", "--n-layers", "1", "--no-progress"]
    assert cli(["train", "numbers", "--out", str(tmp_path / "num"), *args]) == 0
    config = json.loads((tmp_path / "num" / "config.json").read_text(encoding="utf-8"))
    assert (config["steps"], config["d_model"], config["n_train"]) == (5, 16, 1000)


# -------------------------------------------------------------------------------- signals


def test_sigterm_saves_a_checkpoint_and_resume_finishes_identically(tmp_path, corpus):
    cfg = tiny(steps=400, eval_every=100, checkpoint_every=1000, sample_tokens=0)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "tfbook_tools.cli", "train", "gpt", "--out", str(run)]
    cmd += ["--corpus", str(corpus), "--no-progress", *tiny_flags(cfg)]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log, deadline = run / "log.jsonl", time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and len(steps_of(read_log(log))) >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, (proc.returncode, out, err)
    stopped = load_checkpoint(run / CHECKPOINT, cfg)["step"]
    assert 3 <= stopped < 400
    assert f"interrupted at step {stopped} by SIGTERM" in out.decode()
    assert f"--out {run} --resume" in out.decode()
    rows = read_log(log)
    assert steps_of(rows) == list(range(1, stopped + 1))
    assert rows[-1] == {"interrupted": stopped, "signal": "SIGTERM", "seconds": rows[-1]["seconds"]}
    resumed = run_gpt(cfg, run, corpus_dir=corpus, progress=False, resume=True)
    whole = run_gpt(cfg, tmp_path / "whole", corpus_dir=corpus, progress=False)
    assert resumed.losses == whole.losses and resumed.final_val_loss == whole.final_val_loss


def test_ctrl_c_sets_the_flag_a_second_one_stops_at_once_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT)
    with StopSignal() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs between bytecodes of this thread
        assert stop.name == "SIGINT"
        with pytest.raises(KeyboardInterrupt, match="second Ctrl-C"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is before


# ---------------------------------------------------------------- two processes (torchrun)


def test_two_processes_under_torchrun_match_one_process(tmp_path, corpus):
    cfg = tiny(steps=6, sample_tokens=10)
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "tfbook_tools.cli", "train", "gpt", "--out", str(run), "--corpus", str(corpus)]
    cmd += ["--no-progress", *tiny_flags(cfg)]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_log(run / "log.jsonl")
    session = [r["session"] for r in rows if "session" in r]
    assert len(session) == 1 and session[0]["world_size"] == 2  # one writer: rank 0
    assert steps_of(rows) == [1, 2, 3, 4, 5, 6]
    assert done.stdout.count("validation loss") == 1  # rank 1 printed nothing
    single = run_gpt(cfg, tmp_path / "one", corpus_dir=corpus, progress=False)
    # Not bit-equal: each process averages its half of the batch, then gloo averages the
    # halves (and the gradients) in another order of float32 additions than one process.
    assert losses(rows) == pytest.approx(single.losses, rel=1e-6, abs=0)
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    assert val == pytest.approx([v for _, v in single.val_losses], rel=1e-6, abs=0)
    model, _, _ = load_model(run)
    for name, p in model.state_dict().items():
        assert torch.allclose(p, single.model.state_dict()[name], rtol=1e-4, atol=1e-6), name


# ------------------------------------------------------------------ the committed log


def test_the_committed_log_is_reproduced_from_scratch(tmp_path):
    log = COMMITTED / "log.jsonl"
    assert log.is_file(), f"{log} is missing: run `make capstone` and commit its log"
    assert (corpus_folder() / "manifest.json").is_file(), (
        "the Shakespeare corpus is not fetched: run `make corpus` (make unit does it first)"
    )
    rows = read_log(log)
    n = 8
    cmd = [sys.executable, "-m", "tfbook_tools.cli", "train", "gpt", "--out", str(tmp_path)]
    cmd += ["--config", str(COMMITTED / "config.json"), "--overwrite", "--stop-after", str(n)]
    cmd += ["--no-progress", "--device", "cpu"]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    again = read_log(tmp_path / "log.jsonl")
    # The same corpus (checksum-verified), seed, batches and schedule: the same computation.
    # Bit for bit only on the machine and thread count that wrote the log; another CPU's
    # kernels or another thread count add the same float32 numbers in another order. Measured
    # on simulated machines (no-AVX kernels, 1 to 4 threads) over the first 100 steps: at most
    # 2.3e-7 relative. The learning rates are plain Python arithmetic: exact.
    ours = [(r["step"], r["loss"], r["lr"]) for r in again if "loss" in r]
    theirs = [(r["step"], r["loss"], r["lr"]) for r in rows if "loss" in r][:n]
    assert [(s, lr) for s, _, lr in ours] == [(s, lr) for s, _, lr in theirs]
    assert [loss for _, loss, _ in ours] == pytest.approx([loss for _, loss, _ in theirs], rel=1e-5)


def test_the_book_runs_ship_in_the_package_and_load():
    from tfbook.model import count_parameters
    from tfbook.numbers import exact_match, load_numbers, numbers_data
    from tfbook.run import book_run

    for name in ("gpt-char", "gpt-bpe"):
        model, tok, cfg = load_model(book_run(name))  # model.pt, no checkpoint
        session = next(
            r["session"] for r in read_log(book_run(name) / "log.jsonl") if "session" in r
        )
        assert (tok.vocab_size, count_parameters(model)) == (
            session["vocab_size"],
            session["parameters"],
        )
        assert not (book_run(name) / "checkpoint.pt").exists()
    reader, data, cfg = load_numbers(book_run("numbers"))
    _, _, test_pairs = numbers_data(cfg)
    assert exact_match(reader, data, test_pairs[:300]) >= 0.99
    with pytest.raises(ValueError, match="name must be one of"):
        book_run("nope")
