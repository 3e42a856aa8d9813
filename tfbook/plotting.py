"""Matplotlib set-up shared by every chapter (chapter 0).

:func:`setup` registers a Hangul-capable font so Korean labels such as "나는 최근 파리
여행을 다녀왔다" render without "Glyph ... missing" warnings, on a fresh machine and
without any network access. The font comes from, in order:

1. the NanumGothic files shipped inside the pinned PyPI package ``koreanize-matplotlib``
   (we register the files with ``fontManager.addfont``; the package itself is never
   imported, because its ``__init__`` imports the removed ``distutils`` module);
2. a Hangul font already installed on the system (Noto Sans CJK, Nanum, Un, Baekmuk ...).

It also holds the figure helpers more than one chapter uses: :func:`plain_log_ticks` (plain
labels on log axes) and :func:`plot_weights` (an attention-weight heat-map).

It also picks a book-wide style: white figure background (legible in the dark theme),
a colour-blind-safe cycle, and ``axes.unicode_minus = False`` (NanumGothic has no U+2212).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib import font_manager, ticker

__all__ = [
    "setup",
    "hangul_font_path",
    "HANGUL_FONT_FAMILY",
    "COLORS",
    "plain_log_ticks",
    "plot_weights",
]

#: The Okabe and Ito palette, distinguishable with the common forms of colour blindness.
COLORS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

#: Family names of system fonts known to contain Hangul, most preferred first.
_SYSTEM_HANGUL_FAMILIES = (
    "NanumGothic",
    "Noto Sans CJK KR",
    "Noto Sans KR",
    "UnDotum",
    "Baekmuk Gulim",
    "Malgun Gothic",
    "AppleGothic",
)

HANGUL_FONT_FAMILY: str | None = None


def hangul_font_path() -> Path | None:
    """Path of a TrueType font with Hangul glyphs, or ``None`` when none can be found."""
    spec = importlib.util.find_spec("koreanize_matplotlib")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "fonts" / "NanumGothic.ttf"
            if candidate.is_file():
                return candidate
    for family in _SYSTEM_HANGUL_FAMILIES:
        try:
            found = font_manager.findfont(
                font_manager.FontProperties(family=family), fallback_to_default=False
            )
        except ValueError:
            continue
        return Path(found)
    return None


def setup(*, dpi: int = 100) -> str:
    """Configure matplotlib for the book and return the Hangul font family in use.

    Idempotent: calling it again changes nothing.

    Raises:
        RuntimeError: when no Hangul font is available (install the pinned requirements,
            or a system font such as Debian's ``fonts-nanum``).
    """
    global HANGUL_FONT_FAMILY
    path = hangul_font_path()
    if path is None:
        raise RuntimeError(
            "No Hangul font found: install requirements.txt (koreanize-matplotlib ships "
            "NanumGothic) or a system font such as Debian's fonts-nanum."
        )
    font_manager.fontManager.addfont(str(path))
    family = font_manager.FontProperties(fname=str(path)).get_name()
    HANGUL_FONT_FAMILY = family
    mpl.rcParams.update(
        {
            "font.family": "sans-serif",
            "font.sans-serif": [family, "DejaVu Sans"],
            "axes.unicode_minus": False,
            "figure.dpi": dpi,
            "savefig.dpi": dpi,
            "figure.facecolor": "white",
            "savefig.facecolor": "white",
            "axes.facecolor": "white",
            "axes.prop_cycle": mpl.cycler(color=COLORS),
            "axes.grid": True,
            "grid.alpha": 0.3,
            "image.cmap": "viridis",
            "figure.figsize": (6.4, 4.0),
            "axes.titlesize": "medium",
        }
    )
    return family


def plain_log_ticks(ax, axes: str = "xy") -> None:
    """Label the log-scaled axes of ``ax`` as plain numbers (0.01, 1, 100, 1e+06).

    Matplotlib's default log labels are mathtext powers of ten whose minus sign the Hangul
    font lacks; plain labels avoid that and read more easily. Linear axes are left alone.

    Args:
        ax: a matplotlib ``Axes``.
        axes: which axes to relabel, any of ``"x"`` and ``"y"``.
    """
    for name in axes:
        axis = ax.xaxis if name == "x" else ax.yaxis
        if axis.get_scale() != "log":
            continue
        axis.set_major_locator(ticker.LogLocator(base=10, numticks=12))
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(ticker.NullFormatter())


def plot_weights(ax, w, rows, cols, title: str, annotate: bool = True):
    """Draw an attention-weight matrix ``(T_q, T_k)`` as a heat-map: rows = queries, columns = keys.

    Args:
        ax: a matplotlib ``Axes``.
        w: the weights, values in [0, 1] (tensor or array).
        rows, cols: the query and key labels (tokens).
        title: the panel title.
        annotate: write each weight in its cell (for small matrices).

    Returns:
        The ``AxesImage``, for a colour bar.
    """
    w = np.asarray(w, dtype=float)
    if w.shape != (len(rows), len(cols)):
        raise ValueError(
            f"w must have shape (T_q={len(rows)}, T_k={len(cols)}) to match rows and cols, "
            f"got {w.shape}"
        )
    im = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set(xlabel="key (attended to)", ylabel="query (attending)", title=title)
    ax.grid(False)
    if annotate:
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                colour = "black" if w[i, j] > 0.6 else "white"
                ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", fontsize=8, color=colour)
    return im
