"""Tests for tfbook.training (chapter 7).

References: the formulas of the paper (section 5.3) evaluated by hand, PyTorch's own
``clip_grad_norm_`` / ``AdamW`` behaviour, and the loop's observable promises (determinism,
a falling loss, a clear stop at the first NaN).
"""

from __future__ import annotations

import matplotlib
import pytest
import torch
from torch import nn

from tfbook.data import collate_pairs, copy_task
from tfbook.model import GPT, EncoderDecoder, TransformerConfig
from tfbook.objectives import causal_lm_targets, lm_loss, teacher_forcing
from tfbook.training import (
    History,
    TrainConfig,
    lr_multiplier,
    make_optimizer,
    noam_lr,
    plot_history,
    train,
    warmup_cosine,
)

matplotlib.use("Agg")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and far steadier on a busy shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- schedules


def test_noam_lr_peaks_at_warmup_with_the_papers_value():
    d_model, warmup = 512, 4000
    peak = noam_lr(warmup, d_model, warmup)
    assert peak == pytest.approx(512**-0.5 * 4000**-0.5, rel=1e-12)  # 6.99e-4
    assert peak == pytest.approx(6.98771e-4, rel=1e-5)
    values = [noam_lr(s, d_model, warmup) for s in range(1, 20001, 7)]
    best = max(range(len(values)), key=values.__getitem__)
    assert abs((1 + 7 * best) - warmup) <= 7
    assert noam_lr(1, d_model, warmup) == pytest.approx(512**-0.5 * 4000**-1.5)  # linear start
    assert noam_lr(16000, d_model, warmup) == pytest.approx(peak / 2)  # 1/sqrt(step) decay
    with pytest.raises(ValueError, match="step must be a positive int, got 0"):
        noam_lr(0, d_model, warmup)


def test_warmup_cosine_endpoints_and_shape():
    assert warmup_cosine(0, 100, 10) == 0.0
    assert warmup_cosine(5, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(10, 100, 10) == 1.0
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0, abs=1e-15)
    assert warmup_cosine(150, 100, 10) == 0.0
    assert warmup_cosine(100, 100, 10, peak=2.0, floor=0.1) == pytest.approx(0.1)
    assert warmup_cosine(0, 100, 0) == 1.0  # no warm-up: start at the peak
    decay = [warmup_cosine(s, 100, 10) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    with pytest.raises(ValueError, match="floor must be a float in"):
        warmup_cosine(3, 100, 10, peak=1.0, floor=2.0)


def test_lr_multiplier_of_each_schedule():
    cosine = TrainConfig(steps=100, warmup=10, schedule="cosine")
    assert lr_multiplier(cosine, 1) == pytest.approx(0.1) and lr_multiplier(cosine, 10) == 1.0
    noam = TrainConfig(steps=100, warmup=10, schedule="noam")
    assert lr_multiplier(noam, 10) == pytest.approx(1.0)
    assert lr_multiplier(noam, 40) == pytest.approx(0.5)
    assert lr_multiplier(noam, 5) == pytest.approx(0.5)
    constant = TrainConfig(steps=100, warmup=4, schedule="constant")
    assert [lr_multiplier(constant, s) for s in (1, 4, 99)] == [0.25, 1.0, 1.0]


def test_train_config_rejects_bad_values():
    with pytest.raises(ValueError, match=r"schedule must be one of \('cosine', 'noam'"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="steps must be a positive int, got 0"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match=r"betas\[1\] must be a float in \[0, 1\)"):
        TrainConfig(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="warmup must be >= 1 with schedule='noam'"):
        TrainConfig(schedule="noam", warmup=0)


# ----------------------------------------------------------------------------- the loop


def tiny_gpt(dropout: float = 0.0, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    cfg = TransformerConfig(
        vocab_size=12, d_model=16, n_heads=2, d_ff=32, n_layers=1, max_len=16, dropout=dropout
    )
    return GPT(cfg)


def copy_lm_batches(step: int) -> torch.Tensor:
    """Sequences "<bos> x x" (a copy task for a GPT): the second half repeats the first."""
    g = torch.Generator().manual_seed(step)
    x = torch.randint(5, 12, (16, 4), generator=g)
    return torch.cat([torch.full((16, 1), 2), x, x], dim=1)  # (16, 9)


def gpt_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    inputs, targets = causal_lm_targets(ids)
    return lm_loss(model(inputs), targets)


QUIET = dict(progress=False)


def test_same_seed_gives_identical_losses_with_dropout_on():
    cfg = TrainConfig(steps=8, warmup=2, seed=3, **QUIET)
    first = train(tiny_gpt(dropout=0.3), copy_lm_batches, gpt_loss, cfg)
    second = train(tiny_gpt(dropout=0.3), copy_lm_batches, gpt_loss, cfg)
    assert first.losses == second.losses and first.grad_norms == second.grad_norms
    other = train(tiny_gpt(dropout=0.3), copy_lm_batches, gpt_loss, TrainConfig(8, seed=4, **QUIET))
    assert other.losses != first.losses  # the seed drives the dropout masks


def test_loss_decreases_on_a_tiny_copy_task():
    torch.manual_seed(0)
    cfg = TransformerConfig(
        vocab_size=10, d_model=32, n_heads=4, d_ff=64, n_layers=1, max_len=8, dropout=0.0
    )
    model = EncoderDecoder(cfg)
    pairs = copy_task(512, 4, vocab_size=10, seed=0)

    def batch_fn(step):
        return collate_pairs(pairs[(step * 32) % 512 : (step * 32) % 512 + 32])

    def loss_fn(m, batch):
        src, tgt = batch
        dec_in, targets = teacher_forcing(tgt)
        return lm_loss(m(src, dec_in), targets)

    history = train(model, batch_fn, loss_fn, TrainConfig(steps=40, lr=1e-2, warmup=4, **QUIET))
    first, last = sum(history.losses[:5]) / 5, sum(history.losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    assert history.steps == list(range(1, 41)) and len(history.lrs) == 40


def test_nan_loss_stops_training_naming_the_step():
    model = tiny_gpt()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    calls: list[int] = []

    def loss_fn(m, ids):
        calls.append(len(calls) + 1)
        loss = gpt_loss(m, ids)
        return loss * float("nan") if len(calls) == 3 else loss

    with pytest.raises(FloatingPointError, match="loss is nan at step 3"):
        train(model, copy_lm_batches, loss_fn, TrainConfig(steps=10, **QUIET))
    assert len(calls) == 3  # stopped at once
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # two updates happened
    assert all(torch.isfinite(v).all() for v in after.values())  # the NaN step updated nothing


def test_clipping_caps_the_norm_and_history_reports_it_before_clipping():
    model = nn.Linear(4, 1)
    x = torch.full((8, 4), 100.0)

    def loss_fn(m, batch):
        return (m(batch) ** 2).mean()  # a huge gradient

    cfg = TrainConfig(steps=1, clip=0.5, **QUIET)
    history = train(model, lambda step: x, loss_fn, cfg)
    # the last step's gradient is still there: its norm is the clipped one
    after_clip = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters()))
    assert history.grad_norms[0] > 100
    assert after_clip.item() == pytest.approx(0.5, rel=1e-5)  # clipped to cfg.clip
    no_clip = train(nn.Linear(4, 1), lambda step: x, loss_fn, TrainConfig(1, clip=None, **QUIET))
    assert no_clip.grad_norms[0] > 100


def test_optimizer_decays_only_matrices_and_counts_tied_weights_once():
    model = tiny_gpt()
    assert model.head.weight is model.embeddings.token.weight
    opt = make_optimizer(model, TrainConfig(weight_decay=0.1))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"])
    assert all(p.dim() < 2 for p in plain["params"])
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.98)


def test_history_records_the_scheduled_lr_and_evaluations_in_eval_mode():
    modes = []

    def eval_fn(m):
        modes.append((m.training, torch.is_grad_enabled()))
        return 1.5

    model = tiny_gpt(dropout=0.1)
    cfg = TrainConfig(steps=10, lr=1e-3, warmup=5, eval_every=4, schedule="constant", **QUIET)
    history = train(model, copy_lm_batches, gpt_loss, cfg, eval_fn=eval_fn)
    assert history.lrs[:6] == pytest.approx([2e-4, 4e-4, 6e-4, 8e-4, 1e-3, 1e-3])
    assert history.evals == [(4, 1.5), (8, 1.5), (10, 1.5)]
    assert modes == [(False, False)] * 3
    assert not model.training  # left in eval mode
    assert "10 steps" in repr(history)


def test_train_rejects_bad_arguments():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        train("model", copy_lm_batches, gpt_loss, TrainConfig(**QUIET))
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        train(tiny_gpt(), copy_lm_batches, 3, TrainConfig(**QUIET))
    with pytest.raises(TypeError, match="loss_fn must return a scalar floating-point tensor"):
        train(tiny_gpt(), copy_lm_batches, lambda m, b: 1.0, TrainConfig(steps=1, **QUIET))


def test_plot_history_draws_a_log_scaled_loss_curve():
    import matplotlib.pyplot as plt

    history = History(steps=[1, 2, 3], losses=[3.0, 2.0, 1.0], lrs=[1.0] * 3, grad_norms=[1.0] * 3)
    history.evals.append((3, 1.2))
    ax = plot_history(history, title="t")
    assert ax.get_yscale() == "log" and ax.get_title() == "t"
    assert list(ax.lines[0].get_ydata()) == [3.0, 2.0, 1.0] and len(ax.lines) == 2
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="history must hold at least one step"):
        plot_history(History())
