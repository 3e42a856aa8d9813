"""Tests for tfbook.numbers (chapter 8): the Korean-number run, its data split and its metric.

Fast tests only: the full recipe (99.5% in under two minutes) is measured by
``benchmarks/bench_seq2seq.py`` and the chapter, not here.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from tfbook.data import korean_number
from tfbook.model import EncoderDecoder
from tfbook.numbers import (
    HARD_CASES,
    SOURCES,
    NumbersConfig,
    exact_match,
    format_source,
    numbers_data,
    numbers_model_config,
    run_numbers,
    split_numbers,
    wilson_interval,
)

#: A model small enough for a run of a few steps to take a second.
TINY = dict(
    d_model=16,
    n_heads=2,
    d_ff=32,
    n_layers=1,
    steps=4,
    warmup=1,
    batch_size=8,
    n_train=1000,
    n_test=len(HARD_CASES),
)


# ----------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"d_model": 0}, ValueError, "d_model must be a positive int, got 0"),
        ({"d_model": 30, "n_heads": 4}, ValueError, "d_model must be divisible by n_heads"),
        ({"steps": 1.5}, TypeError, "steps must be a positive int"),
        ({"warmup": 700}, ValueError, r"warmup must be an int in \[0, 600\], got 700"),
        ({"batch_size": 60_000}, ValueError, r"batch_size must be an int in \[1, 50000\]"),
        ({"n_train": 10}, ValueError, r"n_train must be an int in \[1000, 10000000\], got 10"),
        ({"n_test": 5}, ValueError, r"n_test must be an int in \[42, 1000000\], got 5"),
        ({"source": "hex"}, ValueError, "source must be one of .*'padded'.*, got 'hex'"),
        ({"label_smoothing": 1.0}, ValueError, r"label_smoothing must be a float in \[0, 1\)"),
        ({"lr": -1e-3}, ValueError, "lr must be a float > 0, got -0.001"),
        ({"norm_first": 1}, TypeError, "norm_first must be a bool, got int 1"),
        ({"dropout": 1.0}, ValueError, r"dropout must be a float in \[0, 1\), got 1.0"),
        ({"eval_every": -1}, ValueError, "eval_every must be an int >= 0, got -1"),
    ],
)
def test_invalid_config_values_are_named(overrides, error, message):
    with pytest.raises(error, match=message):
        NumbersConfig(**overrides)


def test_config_round_trips_through_a_dict_and_refuses_unknown_keys():
    cfg = NumbersConfig(steps=300, source="grouped", label_smoothing=0.05)
    assert NumbersConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match=r"unknown NumbersConfig fields \['layers'\]"):
        NumbersConfig.from_dict(cfg.to_dict() | {"layers": 3})
    with pytest.raises(TypeError, match="values must be a dict, got list"):
        NumbersConfig.from_dict([("steps", 3)])


# ------------------------------------------------------------------------------------- data


def test_held_out_numbers_are_never_training_numbers():
    train, test = split_numbers(20_000, 500, seed=3)
    assert len(train) == 20_000 and len(test) == len(set(test)) == 500
    assert not set(train) & set(test)
    assert set(HARD_CASES) <= set(test) and test == sorted(test)
    assert all(0 <= n <= 99_999_999 for n in train + test)
    cfg = NumbersConfig(**TINY | {"n_test": 300})
    data, numbers, pairs = numbers_data(cfg)
    assert not {s for s, _ in data.pairs} & {s for s, _ in pairs}  # as the model sees them
    assert [r for _, r in pairs] == [korean_number(n) for n in numbers]


def test_test_set_spans_the_range_and_holds_hard_cases():
    _, test = split_numbers(1000, 2000, seed=0)
    lengths = {len(str(n)) for n in test}
    assert lengths == set(range(1, 9))
    eight_digits = [n for n in test if n >= 10_000_000]
    inner_zeros = [n for n in test if "0" in str(n).strip("0")]  # a zero between two digits
    empty_lower_group = [n for n in test if n >= 10_000 and n % 10_000 == 0]
    assert len(eight_digits) > 400 and len(inner_zeros) > 400 and len(empty_lower_group) >= 5
    for n in (1, 10, 100, 1000, 10_000, 100_000, 99_999_999, 10_001, 11_000, 20_000_000):
        assert n in test


def test_training_examples_cover_short_numbers_and_repeat():
    train, _ = split_numbers(30_000, 100, seed=1)
    short = [n for n in train if n < 10]
    assert len(short) > 1000 and len(set(short)) == 9  # 1 is held out (a hard case)
    assert 0 in train  # '영' is only ever the reading of 0


def test_split_is_determined_by_the_seed():
    assert split_numbers(500, 100, seed=4) == split_numbers(500, 100, seed=4)
    assert split_numbers(500, 100, seed=4) != split_numbers(500, 100, seed=5)


@pytest.mark.parametrize(
    ("n", "source", "expected"),
    [
        (12345, "plain", "12345"),
        (12345, "grouped", "1,2345"),
        (1234, "grouped", "1234"),
        (12345, "padded", "00012345"),
        (0, "padded", "00000000"),
        (99_999_999, "grouped", "9999,9999"),
    ],
)
def test_format_source(n, source, expected):
    assert format_source(n, source) == expected


def test_format_source_bad_input_is_named():
    with pytest.raises(ValueError, match=r"n must be an int in \[0, 99999999\], got 100000000"):
        format_source(100_000_000)
    with pytest.raises(TypeError, match="n must be an int"):
        format_source("12")
    with pytest.raises(ValueError, match="source must be one of"):
        format_source(12, "roman")
    assert set(SOURCES) == {"plain", "grouped", "padded"}


# ------------------------------------------------------------------------------ exact match


class ScriptedModel(EncoderDecoder):
    """An EncoderDecoder whose greedy output is fixed in advance: source text -> reading.

    ``encode`` remembers which sources it got; every ``decode`` call returns logits whose
    argmax is the next character of the scripted reading (then ``<eos>``).
    """

    def __init__(self, data, script: dict[str, str]) -> None:
        super().__init__(numbers_model_config(NumbersConfig(**TINY), data.vocab_size))
        self.data, self.script = data, script

    def encode(self, src):
        texts = [
            self.data.source_tokenizer.decode(row, skip_special_tokens=True) for row in src.tolist()
        ]
        tok = self.data.target_tokenizer
        self.plans = [tok.encode(self.script[t]) + [tok.eos_id] for t in texts]
        self.position = 0
        return torch.zeros(src.shape[0], src.shape[1], self.cfg.d_model)  # (B, S, d_model)

    def decode(self, tgt, memory, src_ids=None, cache=None):
        logits = torch.zeros(tgt.shape[0], tgt.shape[1], self.cfg.vocab_size)  # (B, T, V)
        for b, plan in enumerate(self.plans):
            token = plan[min(self.position, len(plan) - 1)]
            logits[b, -1, token] = 1.0
        self.position += 1
        return logits


def test_exact_match_counts_only_readings_that_are_right_to_the_end():
    data, _, _ = numbers_data(NumbersConfig(**TINY))
    pairs = [
        ("00012345", "만 이천삼백사십오"),
        ("00000010", "십"),
        ("00010001", "만 일"),
        ("20000000", "이천만"),
        ("00001111", "천백십일"),
    ]
    script = {
        "00012345": "만 이천삼백사십오",  # right
        "00000010": "일십",  # wrong: the silent 1 read
        "00010001": "만일",  # wrong: the space is missing
        "20000000": "이천만",  # right
        "00001111": "천백십일일",  # wrong: right prefix, too long
    }
    model = ScriptedModel(data, script)
    for batch_size in (1, 2, 500):
        assert exact_match(model, data, pairs, batch_size=batch_size) == pytest.approx(2 / 5)
    assert exact_match(model, data, pairs[:1] + pairs[3:4]) == 1.0
    assert exact_match(model, data, pairs[1:3]) == 0.0


def test_exact_match_bad_input_is_named():
    data, _, pairs = numbers_data(NumbersConfig(**TINY))
    model = EncoderDecoder(numbers_model_config(NumbersConfig(**TINY), data.vocab_size))
    with pytest.raises(TypeError, match="model must be a tfbook.model.EncoderDecoder, got str"):
        exact_match("model", data, pairs)
    with pytest.raises(TypeError, match="data must be a tfbook.data.Seq2SeqData, got list"):
        exact_match(model, [], pairs)
    with pytest.raises(ValueError, match="pairs must hold at least one"):
        exact_match(model, data, [])
    with pytest.raises(TypeError, match=r"pairs\[1\] must be a \(source str, reading str\) pair"):
        exact_match(model, data, [("12", "십이"), ("13", 13)])
    with pytest.raises(TypeError, match="pairs must be a list of"):
        exact_match(model, data, "12")
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        exact_match(model, data, pairs, batch_size=0)


def test_wilson_interval_solves_its_defining_equation():
    z = 1.96
    for k, n in ((1990, 2000), (2000, 2000), (0, 50), (37, 40)):
        lo, hi = wilson_interval(k, n)
        p = k / n
        assert 0.0 <= lo <= p <= hi <= 1.0
        for end in (lo, hi):  # Wilson: the p0 with |p - p0| = z sqrt(p0 (1 - p0) / n)
            if 0.0 < end < 1.0:
                assert math.isclose((p - end) ** 2, z * z * end * (1 - end) / n, rel_tol=1e-9)
    assert math.isclose(wilson_interval(2000, 2000)[0], 2000 / (2000 + z * z), rel_tol=1e-12)
    with pytest.raises(ValueError, match="successes must be at most n=5, got 6"):
        wilson_interval(6, 5)


# ------------------------------------------------------------------------------------ a run


@pytest.fixture
def one_thread():
    """One torch thread, restored afterwards: the same reduction order in every run, and no
    thread oversubscription on a busy machine (tiny models gain nothing from two threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_few_steps_are_deterministic_with_the_seed(tmp_path, one_thread):
    first = run_numbers(NumbersConfig(**TINY), tmp_path / "a", progress=False)
    again = run_numbers(NumbersConfig(**TINY), progress=False)
    other = run_numbers(NumbersConfig(**TINY | {"seed": 1}), progress=False)
    assert first.history.losses == again.history.losses
    assert first.history.losses != other.history.losses
    for a, b in zip(first.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert first.data.pairs == again.data.pairs != other.data.pairs  # the training numbers
    assert first.accuracy == first.history.evals[-1][1]
    assert 0.0 <= first.interval[0] <= first.accuracy <= first.interval[1] <= 1.0
    assert len(first.wrong) == min(20, round((1 - first.accuracy) * len(first.test_pairs)))
    for n, got, want in first.wrong:
        assert want == korean_number(n) != got


def test_run_writes_config_and_log_lines(tmp_path, one_thread):
    result = run_numbers(NumbersConfig(**TINY | {"eval_every": 2}), tmp_path, progress=False)
    assert (
        NumbersConfig.from_dict(json.loads((tmp_path / "config.json").read_text())) == result.config
    )
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "accuracy" in r and "done" not in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert set(steps[0]) == {"step", "loss", "lr", "grad_norm", "seconds"}
    assert [r["loss"] for r in steps] == result.history.losses
    seconds = [r["seconds"] for r in steps]
    assert all(0 < a < b for a, b in zip(seconds, seconds[1:], strict=False))
    assert [(r["step"], r["accuracy"]) for r in evals] == result.history.evals
    assert [r["step"] for r in evals] == [2, 4]
    done = rows[-1]
    assert done["done"] is True and done["accuracy"] == result.accuracy
    assert done["seconds"] == result.seconds == seconds[-1]


def test_run_bad_arguments_are_named(tmp_path):
    with pytest.raises(TypeError, match="cfg must be a NumbersConfig, got dict"):
        run_numbers({"steps": 3})
    file = tmp_path / "a_file"
    file.write_text("keep me")
    with pytest.raises(ValueError, match="out_dir must be a folder, got the file"):
        run_numbers(NumbersConfig(**TINY), file, progress=False)
    assert file.read_text() == "keep me"
    with pytest.raises(TypeError, match="progress must be a bool"):
        run_numbers(NumbersConfig(**TINY), progress="no")
