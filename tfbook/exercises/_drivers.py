"""Drivers: how the engine calls an answer that is not a plain function of its inputs.

A training step needs a model and an optimizer; a driver builds them from plain data wherever
the answer runs (in the notebook, in the grading sandbox), calls the answer as a training loop
would and returns plain data. ``Question(driver=...)`` names an entry of :data:`DRIVERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tfbook.exercises._watch import _resolve

__all__ = ["DRIVERS", "drive_training_step"]


def _build_model(run: dict) -> torch.nn.Module:
    """The model a driver's ``run`` describes: ``run["model"]`` (a dotted class name) built
    from ``run["config_class"](**run["config"])`` with the seed ``run["init_seed"]`` (the
    global generator is left as it was), in ``run["dtype"]``, in training mode."""
    config = _resolve(run["config_class"])(**run["config"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run["init_seed"])
        model = _resolve(run["model"])(config)
    return model.to(getattr(torch, run.get("dtype", "float32"))).train()


def _exact_match(
    model: torch.nn.Module, src: torch.Tensor, tgt: torch.Tensor, pad_id: int
) -> float:
    """Fraction of the pairs whose every target token is the model's most likely one.

    With teacher forcing, a row all of whose next-token argmaxes are right is exactly the row
    greedy decoding gets right (each greedy step then reads the true previous tokens).
    """
    model.eval()
    with torch.no_grad():
        predicted = model(src, tgt[:, :-1]).argmax(dim=-1)  # (N, T - 1)
    target = tgt[:, 1:]  # (N, T - 1)
    right = (predicted == target) | (target == pad_id)  # padding never counts against a row
    return right.all(dim=1).double().mean().item()


def drive_training_step(step: Callable[..., Any], run: dict) -> dict:
    """Call a training step the way a training loop does, on a model and an optimizer built
    from plain data, and return what the updates did (also plain data).

    ``step(model, optimizer, src, tgt, pad_id, clip)`` must make one update and return the
    loss as a Python float. ``run`` describes the model (see :func:`_build_model`), the
    optimizer (``run["optimizer"]``, a class of ``torch.optim``, with ``run["optimizer_args"]``)
    and ``run["pad_id"]``, ``run["clip"]``, and then either

    - ``run["batches"]``: a list of ``(src, tgt)``, one update each; returns
      ``{"losses": [...], "parameters": state dict after the last update}``, or
    - ``run["train"] = (src, tgt)``, ``run["steps"]``, ``run["batch_size"]``, ``run["seed"]``
      and ``run["test"] = (src, tgt)``: that many updates on random batches of the training
      pairs (drawn with their own generator); returns ``{"exact match": fraction of the test
      pairs the model then gets entirely right}`` (:func:`_exact_match`).
    """
    model = _build_model(run)
    optimizer = getattr(torch.optim, run["optimizer"])(model.parameters(), **run["optimizer_args"])
    losses: list[float] = []

    def update(src: torch.Tensor, tgt: torch.Tensor) -> None:
        loss = step(model, optimizer, src, tgt, run["pad_id"], run["clip"])
        if not isinstance(loss, float):
            raise TypeError(
                f"the training step must return the loss as a Python float (loss.item()), "
                f"got {type(loss).__name__}"
            )
        losses.append(loss)

    if "batches" in run:
        for src, tgt in run["batches"]:
            update(src, tgt)
        parameters = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return {"losses": losses, "parameters": parameters}
    src, tgt = run["train"]
    generator = torch.Generator().manual_seed(run["seed"])
    for _ in range(run["steps"]):
        rows = torch.randint(src.shape[0], (run["batch_size"],), generator=generator)
        update(src[rows], tgt[rows])
    return {"exact match": _exact_match(model, *run["test"], run["pad_id"])}


#: Drivers by name (``Question.driver``): ``name -> (driver, how the answer is called)``. The
#: driver is called as ``driver(answer, *case.args, **case.kwargs)``.
DRIVERS: dict[str, tuple[Callable[..., Any], str]] = {
    "training step": (drive_training_step, "called by the check's training loop"),
}


def _driven(fn: Callable[..., Any], driver: str | None) -> Callable[..., Any]:
    """``fn`` itself, or ``fn`` called through the named driver."""
    if driver is None:
        return fn
    if driver not in DRIVERS:
        raise ValueError(f"unknown driver {driver!r}; known: {sorted(DRIVERS)}")
    drive = DRIVERS[driver][0]

    def driven(*args: Any, **kwargs: Any) -> Any:
        return drive(fn, *args, **kwargs)

    return driven
