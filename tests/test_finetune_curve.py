"""Chapter 9's shipped measurements: the label curve and the cost of each way of fine-tuning.

``make capstone`` runs ``benchmarks/finetune_curve.py`` and ships its JSON
(``tfbook/data/capstone/finetune/curve.json``). Checked here: the file has the schema the
chapter reads; its parameter counts and bytes are what the same models, rebuilt, give; its
references are what the rule gives on the same test lines; one of its runs is reproduced; the
figure draws what the records hold; bad input is refused by name.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import matplotlib
import pytest
import torch

from tfbook import finetune as ft
from tfbook import tasks
from tfbook.corpus import fetch_shakespeare
from tfbook.model import GPT
from tfbook.run import book_run, load_model

matplotlib.use("Agg")

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "finetune_curve.py"


@pytest.fixture(scope="module")
def curve():
    return ft.read_curve()


@pytest.fixture(scope="module")
def gpt():
    model, tokenizer, cfg = load_model(book_run("gpt-char"))
    return model, tokenizer, cfg


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("finetune_curve", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ the file


def test_every_run_is_there_once(curve):
    counts, seeds = curve["task"]["train_lines"], len(curve["task"]["train_seeds"])
    keys = [(r["train_lines"], r["way"], r["seed"]) for r in curve["curve"]]
    assert len(keys) == len(set(keys)) == len(counts) * 2 * seeds
    assert {k[0] for k in keys} == set(counts) and len(counts) >= 3
    assert seeds >= 3
    cost = [(r["way"], r["seed"]) for r in curve["cost"]]
    assert len(cost) == len(set(cost)) == len(ft.CURVE_WAYS) * seeds
    assert {r["train_lines"] for r in curve["cost"]} == {curve["cost_count"]}
    for record in curve["curve"] + curve["cost"]:
        for key in ("test_f1", "test_accuracy"):
            assert 0.0 <= record[key] <= 1.0
        assert record["seconds_per_step"] > 0
    assert curve["machine"]["threads"] >= 1


def test_the_test_plays_were_unseen_in_pretraining(curve):
    assert set(curve["task"]["test_plays"]) <= set(tasks.TEST_PLAYS)


def test_the_curve_records_are_the_cost_records_at_the_same_count(curve):
    at_count = {
        (r["way"], r["seed"]): r["test_f1"]
        for r in curve["curve"]
        if r["train_lines"] == curve["cost_count"]
    }
    for r in curve["cost"]:
        if r["way"] in ("full", "scratch"):
            assert at_count[(r["way"], r["seed"])] == r["test_f1"]


def test_parameter_counts_are_those_of_the_rebuilt_models(curve, gpt, bench):
    model, _, _ = gpt
    lora = curve["lora"]
    with torch.device("meta"):  # shapes only: no weights are made
        for way in ft.CURVE_WAYS:
            rebuilt = bench.build(way, GPT(model.cfg), 0)
            expected = ft.trainable_parameters(rebuilt)
            for r in curve["cost"]:
                if r["way"] == way:
                    assert (r["trainable"], r["total"]) == expected, way
    cfg, n_tags = model.cfg, len(tasks.TAGS)
    head = cfg.d_model * n_tags + n_tags
    adapters = cfg.n_layers * len(lora["targets"]) * lora["r"] * 2 * cfg.d_model
    by_way = {r["way"]: r for r in curve["cost"]}
    assert by_way["frozen"]["trainable"] == head
    assert by_way["lora"]["trainable"] == adapters + head  # r (d_in + d_out) per layer
    assert by_way["lora"]["total"] == by_way["full"]["total"] + adapters


def test_bytes_are_four_per_float_and_two_moments(curve, gpt, bench):
    model, tokenizer, cfg = gpt
    for r in curve["cost"]:
        assert r["weight_bytes"] == 4 * r["total"]
        assert r["gradient_bytes"] == 4 * r["trainable"]
        assert r["adamw_state_bytes"] == 8 * r["trainable"]
    batch = bench.full_batch(tokenizer, cfg.context)
    measured = {}
    for way in ("full", "frozen", "lora"):
        measured[way] = ft.saved_activation_bytes(bench.build(way, model, 0), batch)
        for r in curve["cost"]:
            if r["way"] == way:
                assert r["activation_bytes"] == measured[way], way
    # a frozen body keeps only the head's input: batch x length x d_model floats
    assert measured["frozen"] == 4 * batch.numel() * cfg.d_model
    assert measured["frozen"] < measured["lora"] < measured["full"]


def test_references_are_what_the_rule_gives_on_the_test_lines(curve, gpt, bench):
    _, tokenizer, cfg = gpt
    split = bench.test_split(fetch_shakespeare())
    assert list(split.test_plays) == curve["task"]["test_plays"]
    gold = ft.encode_tags([tags for _, tags in split.test], cfg.context)
    rule = ft.encode_tags([tasks.capitalised_words(line) for line, _ in split.test], cfg.context)
    refs = curve["references"]
    assert refs["capital_rule"] == round(ft.name_f1(rule, gold), 4)
    assert refs["every_character"] == round(ft.name_f1(torch.ones_like(gold), gold), 4)


def test_a_shipped_run_is_reproduced(curve, gpt, bench, one_thread):
    """The frozen body at the cost count, seed 0: the cheapest run, trained again here."""
    model, tokenizer, cfg = gpt
    record = next(r for r in curve["cost"] if r["way"] == "frozen" and r["seed"] == 0)
    folder = fetch_shakespeare()
    train = tasks.name_tagging_task(
        folder, train_lines=record["train_lines"], test_lines=curve["task"]["test_lines"], seed=100
    ).train
    x = ft.encode_texts(tokenizer, [line for line, _ in train], cfg.context)
    y = ft.encode_tags([tags for _, tags in train], cfg.context)
    test = bench.test_split(folder).test
    x_test = ft.encode_texts(tokenizer, [line for line, _ in test], cfg.context)
    y_test = ft.encode_tags([tags for _, tags in test], cfg.context)
    tagger = bench.build("frozen", model, 0)
    ft.fine_tune(
        tagger,
        x,
        y,
        steps=curve["steps"],
        batch_size=curve["batch_size"],
        lr=curve["lr"]["frozen"],
        seed=0,
    )
    f1 = ft.name_f1(ft.predict(tagger, x_test), y_test)
    assert f1 == pytest.approx(record["test_f1"], abs=0.01)  # another CPU may round otherwise


def test_pretrained_beats_scratch_at_the_smallest_label_count(curve):
    """The claim the chapter's figure makes, on every seed of the shipped run."""
    smallest = min(curve["task"]["train_lines"])
    f1 = {
        (r["way"], r["seed"]): r["test_f1"] for r in curve["curve"] if r["train_lines"] == smallest
    }
    for seed in {s for _, s in f1}:
        assert f1[("full", seed)] > f1[("scratch", seed)] + 0.1, seed


# --------------------------------------------------------------------- figure and table


def test_label_curve_points_are_mean_min_max_over_seeds(curve):
    for way in ("full", "scratch"):
        points = ft.label_curve_points(curve, way)
        assert [n for n, *_ in points] == sorted(curve["task"]["train_lines"])
        for n, mean, low, high in points:
            f1 = [r["test_f1"] for r in curve["curve"] if r["way"] == way and r["train_lines"] == n]
            assert mean == pytest.approx(sum(f1) / len(f1))
            assert (low, high) == (min(f1), max(f1))


def test_plot_label_curve_draws_the_records(curve):
    import matplotlib.pyplot as plt

    fig = ft.plot_label_curve(curve)
    try:
        ax = fig.axes[0]
        lines = {line.get_label(): line for line in ax.get_lines()}
        full = lines["pre-trained GPT, full fine-tuning"]
        points = ft.label_curve_points(curve, "full")
        assert list(full.get_xdata()) == [p[0] for p in points]
        assert list(full.get_ydata()) == pytest.approx([p[1] for p in points])
        scratch = lines["same GPT from scratch"]
        assert list(scratch.get_ydata()) == pytest.approx(
            [p[1] for p in ft.label_curve_points(curve, "scratch")]
        )
        rule = lines["rule: capitalised word"]
        assert list(rule.get_ydata()) == [curve["references"]["capital_rule"]] * 2
        assert len(ax.collections) == 2  # one min-max band per way
        assert ax.get_xscale() == "log"
        assert ax.get_xlabel() and ax.get_ylabel()
    finally:
        plt.close(fig)


def test_plot_label_curve_draws_on_a_given_axes(curve):
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2)
    try:
        assert ft.plot_label_curve(curve, ax=right) is fig
        assert not left.get_lines() and right.get_lines()
    finally:
        plt.close(fig)


def test_cost_rows_summarise_the_cost_records(curve):
    rows = ft.cost_rows(curve)
    assert [row["way"] for row in rows] == list(ft.CURVE_WAYS)
    full = rows[0]
    for row in rows:
        mine = [r for r in curve["cost"] if r["way"] == row["way"]]
        assert row["f1_mean"] == pytest.approx(sum(r["test_f1"] for r in mine) / len(mine))
        assert row["vs_full"] == pytest.approx(row["f1_mean"] - full["f1_mean"])
        assert row["trainable_share"] == mine[0]["trainable"] / mine[0]["total"]
        assert row["training_bytes"] == 12 * row["trainable"]
    by_way = {row["way"]: row for row in rows}
    assert by_way["full"]["trainable_share"] == 1.0
    assert by_way["frozen"]["trainable_share"] < by_way["lora"]["trainable_share"] < 0.05


# ------------------------------------------------------------------------ bad input


def test_read_curve_bad_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"path must be .*make capstone"):
        ft.read_curve(tmp_path / "missing.json")
    with pytest.raises(TypeError, match="path must be a str or Path"):
        ft.read_curve(3)
    broken = tmp_path / "curve.json"
    broken.write_text(json.dumps({"run": "gpt-char"}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"curve must hold the keys .* without \['task'"):
        ft.read_curve(broken)


def test_curve_functions_refuse_a_bad_curve_by_name(curve):
    with pytest.raises(TypeError, match="curve must be the dict read_curve"):
        ft.plot_label_curve(curve["curve"])
    no_seed = copy.deepcopy(curve)
    del no_seed["cost"][1]["seed"]
    with pytest.raises(ValueError, match=r"curve\['cost'\]\[1\] must hold the keys .*'seed'"):
        ft.cost_rows(no_seed)
    empty = copy.deepcopy(curve) | {"curve": []}
    with pytest.raises(ValueError, match=r"curve\['curve'\] must be a non-empty list"):
        ft.plot_label_curve(empty)
    with pytest.raises(ValueError, match="way must be one of .*got 'lora'"):
        ft.label_curve_points(curve, "lora")
    no_full = copy.deepcopy(curve)
    no_full["cost"] = [r for r in no_full["cost"] if r["way"] != "full"]
    with pytest.raises(ValueError, match="'full'"):
        ft.cost_rows(no_full)


def test_activation_bytes_bad_input():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        ft.saved_activation_bytes("gpt", torch.zeros(1, 1, dtype=torch.long))
