"""Matplotlib set-up shared by every chapter (chapter 0).

:func:`setup` registers a Hangul-capable font so Korean labels such as "나는 최근 파리
여행을 다녀왔다" render without "Glyph ... missing" warnings, on a fresh machine and
without any network access. The font comes from, in order:

1. the NanumGothic files shipped inside the pinned PyPI package ``koreanize-matplotlib``
   (we register the files with ``fontManager.addfont``; the package itself is never
   imported, because its ``__init__`` imports the removed ``distutils`` module);
2. a Hangul font already installed on the system (Noto Sans CJK, Nanum, Un, Baekmuk ...).

It also picks a book-wide style: white figure background (legible in the dark theme),
a colour-blind-safe cycle, and ``axes.unicode_minus = False`` (NanumGothic has no U+2212).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib as mpl
from matplotlib import font_manager

__all__ = ["setup", "hangul_font_path", "HANGUL_FONT_FAMILY", "COLORS"]

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
