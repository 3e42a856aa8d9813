"""Argument checks shared by every module (chapter 0, private).

One home for validation, one message style: the argument's name, what was expected, and
what was given, e.g. ``d_model must be a positive int, got -3`` or
``x must have shape (B, T, d_model=16), got (2, 5, 8)``. The checks return the value they
accept, so a constructor reads ``self.d_model = positive_int("d_model", d_model)`` and the
``forward`` methods stay one line per step of the paper.

Checked once, at the boundary: a model (``tfbook.model.GPT``, ``BERT``, ...) checks its
inputs in its own ``forward`` and then calls layers that trust it. Every layer that checks its
inputs when used on its own has an attribute ``check_inputs`` (``True`` by default);
:func:`skip_inner_checks` switches it off in the layers a model or a layer built itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "positive_int",
    "nonneg_int",
    "probability",
    "positive_float",
    "tensor",
    "last_axis",
    "shape",
    "token_ids",
    "bool_mask",
    "one_of",
    "boolean",
    "divisible",
    "attn_mask",
    "key_mask",
    "number_in",
    "int_in",
    "values_readable",
    "skip_inner_checks",
]


def values_readable(t: Tensor) -> bool:
    """Whether a check may read ``t``'s values without a cost the caller did not ask for.

    Shape and dtype checks cost nothing anywhere. Reading values (``int(ids.max())``) is free
    on the CPU, but on a GPU it waits for the device (a host synchronisation per call), under
    ``torch.compile`` it splits the graph, and on the ``meta`` device there are no values. So
    value checks run on CPU tensors in eager mode only; elsewhere an out-of-range id is left to
    the embedding (a device-side assert on CUDA). Run a batch once on the CPU to get the
    readable message.
    """
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def skip_inner_checks(module: torch.nn.Module) -> None:
    """Set ``check_inputs = False`` in every layer inside ``module`` (not in ``module`` itself).

    ``module`` checks its inputs once, in its own ``forward``; the layers it built receive
    what it checked (or computed itself) and need not look again.
    """
    for inner in module.modules():
        if inner is not module and hasattr(inner, "check_inputs"):
            inner.check_inputs = False


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(name: str, value: object) -> int:
    """``value`` as an int >= 1, or a TypeError/ValueError naming ``name``."""
    if not _is_int(value):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def nonneg_int(name: str, value: object) -> int:
    """``value`` as an int >= 0."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an int >= 0, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value}")
    return value


def probability(name: str, value: object) -> float:
    """``value`` as a float in [0, 1) (a dropout rate)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(value).__name__}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1), got {value}")
    return float(value)


def positive_float(name: str, value: object) -> float:
    """``value`` as a float > 0."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a float > 0, got {type(value).__name__}")
    if not float(value) > 0.0:
        raise ValueError(f"{name} must be a float > 0, got {value}")
    return float(value)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"  # 1 not 1.0; inf stays inf


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    return f"{'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}{')' if high_open else ']'}"


def number_in(
    name: str,
    value: object,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float in the interval from ``low`` to ``high`` (chapter 7).

    ``low_open`` / ``high_open`` exclude an end, e.g. ``top_p must be a float in (0, 1], got 0``.
    ``high`` may be ``math.inf``.
    """
    where = _interval(low, high, low_open, high_open)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a float in {where}, got {type(value).__name__} {value!r}")
    v = float(value)
    too_low = v <= low if low_open else v < low
    too_high = v >= high if high_open else v > high
    if v != v or too_low or too_high:  # v != v: NaN
        raise ValueError(f"{name} must be a float in {where}, got {value}")
    return v


def int_in(name: str, value: object, low: int, high: int) -> int:
    """``value`` if it is an int with ``low <= value <= high`` (chapter 7)."""
    if not _is_int(value):
        raise TypeError(
            f"{name} must be an int in [{low}, {high}], got {type(value).__name__} {value!r}"
        )
    if not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value}")
    return value


def one_of(name: str, value: object, allowed: Sequence[object]) -> object:
    """``value`` if it is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


def tensor(name: str, value: object) -> Tensor:
    """``value`` if it is a ``torch.Tensor``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def shape(name: str, value: object, spec: str, ok: bool) -> Tensor:
    """``value`` if it is a tensor and ``ok``; otherwise name the expected ``spec`` and the shape.

    ``spec`` is written in the book's symbols, e.g. ``"(B, T, d_model=16)"``.
    """
    tensor(name, value)
    if not ok:
        raise ValueError(f"{name} must have shape {spec}, got {tuple(value.shape)}")
    return value


def last_axis(name: str, value: object, d_model: int) -> Tensor:
    """``value`` if it is a tensor ``(..., d_model)``."""
    tensor(name, value)
    return shape(
        name, value, f"(..., d_model={d_model})", value.dim() > 0 and value.shape[-1] == d_model
    )


def token_ids(
    name: str,
    ids: object,
    vocab_size: int,
    dims: tuple[int, ...] | None = None,
    max_len: int | None = None,
) -> Tensor:
    """``ids`` if it is an integer tensor (of ``dims`` dimensions) with every id in ``[0, V)``.

    With ``max_len``, the last axis (the positions ``T``) may be at most ``max_len`` long.
    """
    tensor(name, ids)
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if dims is not None and ids.dim() not in dims:
        want = " or ".join({1: "(T,)", 2: "(B, T)"}.get(d, f"{d}-D") for d in dims)
        raise ValueError(f"{name} must have shape {want}, got {tuple(ids.shape)}")
    readable = ids.numel() and values_readable(ids)  # no host sync on a GPU or under compile
    if readable and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(
            f"{name} must be token ids in [0, V={vocab_size}), got values from "
            f"{int(ids.min())} to {int(ids.max())}"
        )
    if max_len is not None and ids.dim() and ids.shape[-1] > max_len:
        raise ValueError(
            f"{name} must have at most max_len={max_len} positions (T <= max_len), "
            f"got T={ids.shape[-1]}"
        )
    return ids


def bool_mask(name: str, mask: object, target: tuple[int, ...]) -> Tensor:
    """``mask`` if it is a boolean tensor (True = may attend) that broadcasts to ``target``."""
    tensor(name, mask)
    if mask.dtype != torch.bool:
        raise TypeError(
            f"{name} must be a boolean tensor (True = may attend), got dtype {mask.dtype}; "
            "a float mask would be added to the scores and block nothing: use mask.bool()"
        )
    if not _broadcasts_to(tuple(mask.shape), tuple(target)):
        raise ValueError(
            f"{name} must broadcast to the attention scores' shape {tuple(target)}, "
            f"got {tuple(mask.shape)}"
        )
    return mask


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether ``shape`` broadcasts to exactly ``target`` (each trailing size 1 or equal).

    The same answer as ``torch.broadcast_shapes(shape, target) == target``, without its
    cost (tens to hundreds of microseconds a call, paid by every attention call while
    decoding token by token).
    """
    if len(shape) > len(target):
        return False
    tail = target[len(target) - len(shape) :]  # the sizes shape lines up with
    return all(s == 1 or s == t for s, t in zip(shape, tail, strict=True))


def boolean(name: str, value: object) -> bool:
    """``value`` if it is a ``bool`` (not merely truthy)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def divisible(name: str, value: int, by_name: str, by: int) -> int:
    """``value`` if ``by`` divides it, e.g. ``d_model`` by ``n_heads``."""
    if value % by != 0:
        raise ValueError(
            f"{name} must be divisible by {by_name}, got {name}={value}, {by_name}={by}"
        )
    return value


def attn_mask(name: str, mask: object, batch: int, t_q: int, t_k: int) -> Tensor:
    """``mask`` if it is a boolean ``(T_q, T_k)`` or ``(B, T_q, T_k)`` mask (``True`` = may
    attend), or one that broadcasts to it such as ``(B, 1, T_k)``."""
    tensor(name, mask)
    if mask.dim() not in (2, 3):
        raise ValueError(
            f"{name} must have shape (T_q={t_q}, T_k={t_k}), (B={batch}, T_q={t_q}, T_k={t_k}) "
            f"or (B={batch}, 1, T_k={t_k}), got {tuple(mask.shape)}"
        )
    return bool_mask(name, mask, (batch, t_q, t_k))


def key_mask(name: str, mask: object, batch: int, seq_len: int) -> Tensor:
    """A Hugging Face style ``attention_mask`` ``(B, T)`` (1 or ``True`` = real token, 0 or
    ``False`` = padding) as the book's boolean key mask ``(B, 1, T)``."""
    tensor(name, mask)
    if mask.dtype.is_floating_point or mask.dtype.is_complex:
        raise TypeError(
            f"{name} must be a boolean or 0/1 integer tensor (1 = real token), got dtype "
            f"{mask.dtype}; a float mask is ambiguous (0/1 or additive -inf?): use mask.bool()"
        )
    shape(name, mask, f"(B={batch}, T={seq_len})", tuple(mask.shape) == (batch, seq_len))
    if mask.dtype != torch.bool:
        if mask.numel() and values_readable(mask) and (int(mask.min()) < 0 or int(mask.max()) > 1):
            raise ValueError(
                f"{name} must hold 0 (padding) and 1 (real token), got values from "
                f"{int(mask.min())} to {int(mask.max())}"
            )
        mask = mask.bool()
    return mask[:, None, :]  # (B, 1, T): shared by every query
