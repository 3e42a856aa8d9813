"""Drawing primitives shared by the schematics of :mod:`tfbook.diagrams` (private).

Blocks, arrows, residual paths, tensors with their shapes and the sub-layer unit (norm,
sub-layer, residual add) in one visual vocabulary; :mod:`tfbook.diagrams` composes them into
the book's figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace

import matplotlib.pyplot as plt
from matplotlib.patches import Circle, FancyBboxPatch, Rectangle

from tfbook import _validate as check
from tfbook import plotting

#: kind of block -> (edge colour, fill colour); edges from the Okabe and Ito palette.
BLOCK_COLORS: dict[str, tuple[str, str]] = {
    "embedding": ("#009E73", "#CDEBE2"),
    "position": ("#CC79A7", "#F3DDEA"),
    "attention": ("#E69F00", "#FCE8C3"),
    "cross": ("#D55E00", "#F7D5BF"),
    "ffn": ("#0072B2", "#CCE0F0"),
    "norm": ("#8F8400", "#FAF6C8"),
    "output": ("#56B4E9", "#DDF0FB"),
    "tensor": ("#555555", "#FFFFFF"),
}

ARROW = "#333333"
RESIDUAL = "#000000"
MONO = "DejaVu Sans Mono"  # shapes: ASCII only, so matplotlib's own monospace font is enough
FADED = 0.25  # alpha of the blocks a highlighted map leaves in the background
#: every schematic is this wide (inches): at 100 dpi about the book's text column, so the
#: browser shows it close to its own size and a 10 pt label stays about 13 px high
BOOK_WIDTH = 6.7


# ------------------------------------------------------------------------------ sizes


def sizes(cfg: object) -> SimpleNamespace:
    """The sizes a drawing needs, read from ``cfg`` (a config, or a model with ``.cfg``)."""
    cfg = getattr(cfg, "cfg", cfg)
    missing = [a for a in ("d_model", "n_heads") if not hasattr(cfg, a)]
    if missing:
        raise TypeError(
            "cfg must be a TransformerConfig (or a model or object with d_model, n_heads, "
            f"n_layers), got {type(cfg).__name__} without {', '.join(missing)}"
        )
    d_model = check.positive_int("cfg.d_model", cfg.d_model)
    n_heads = check.positive_int("cfg.n_heads", cfg.n_heads)
    check.divisible("cfg.d_model", d_model, "cfg.n_heads", n_heads)
    n_layers = check.positive_int("cfg.n_layers", getattr(cfg, "n_layers", 1))
    n_decoder = getattr(cfg, "n_decoder_layers", None)
    n_decoder = (
        n_layers if n_decoder is None else check.positive_int("cfg.n_decoder_layers", n_decoder)
    )
    norm_first = check.boolean("cfg.norm_first", getattr(cfg, "norm_first", False))
    final_norm = getattr(cfg, "final_norm", None)
    return SimpleNamespace(
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_model // n_heads,
        d_ff=getattr(cfg, "d_ff", None),
        n_layers=n_layers,
        n_decoder=n_decoder,
        norm_first=norm_first,
        final_norm=norm_first if final_norm is None else bool(final_norm),
        positional=getattr(cfg, "positional", "sinusoidal"),
    )


def shape(*dims: object) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"


# -------------------------------------------------------------------------- primitives


def canvas(width: float, height: float, inches_per_unit: float = 0.5):
    """A figure whose single axes spans it, in data units ``[0, width] x [0, height]``."""
    if plotting.HANGUL_FONT_FAMILY is None:
        plotting.setup()
    fig = plt.figure(figsize=(width * inches_per_unit, height * inches_per_unit))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def block(ax, x, y, w, h, kind, title, korean=None, chapter=None, alpha=1.0, size=10.0):
    """A rounded block centred at ``(x, y)``: its name, its Korean term, a chapter tag."""
    edge, fill = BLOCK_COLORS[kind]
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0,rounding_size=0.12",
            fc=fill,
            ec=edge,
            lw=1.6,
            alpha=alpha,
            zorder=3,
        )
    )
    if korean:
        fit(
            ax.text(
                x,
                y + h * 0.17,
                title,
                ha="center",
                va="center",
                fontsize=size,
                alpha=alpha,
                zorder=4,
            ),
            w,
        )
        fit(
            ax.text(
                x,
                y - h * 0.22,
                korean,
                ha="center",
                va="center",
                fontsize=size - 1.5,
                color="#444444",
                alpha=alpha,
                zorder=4,
            ),
            w,
        )
    else:
        fit(ax.text(x, y, title, ha="center", va="center", fontsize=size, alpha=alpha, zorder=4), w)
    if chapter is not None:
        tag(ax, x + w / 2 - 0.05, y + h / 2, chapter, alpha)


def fit(text, width: float, smallest: float = 7.5) -> None:
    """Shrink ``text`` (half a point at a time) until it fits ``width`` data units, padding
    included; a label never overflows its block, whatever the configuration writes in it."""
    ax = text.axes
    renderer = ax.figure.canvas.get_renderer()
    room = (ax.transData.transform((width, 0)) - ax.transData.transform((0, 0)))[0] * 0.92
    size = text.get_fontsize()
    while text.get_window_extent(renderer).width > room and size > smallest:
        size -= 0.5
        text.set_fontsize(size)


def tag(ax, x, y, chapter, alpha=1.0):
    """The badge naming the chapter that builds a block: dark on a highlighted (or plain)
    block, an outlined grey label on a faded one, so it stays readable without competing."""
    faded = alpha < 1.0
    box = {"boxstyle": "round,pad=0.18", "fc": "white" if faded else "#333333"}
    box |= {"ec": "#AAAAAA" if faded else "none", "lw": 0.6}
    ax.text(
        x,
        y,
        f"ch. {chapter}",
        ha="right",
        va="center",
        fontsize=7.5,
        color="#777777" if faded else "white",
        zorder=6,
        bbox=box,
    )


def arrow(ax, start, end, color=ARROW, lw=1.4, alpha=1.0, style="-|>"):
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        zorder=2,
        arrowprops={
            "arrowstyle": style,
            "color": color,
            "lw": lw,
            "alpha": alpha,
            "shrinkA": 0,
            "shrinkB": 0,
            "mutation_scale": 12,
        },
    )


def path(ax, points, color=ARROW, lw=1.4, alpha=1.0):
    """A polyline through ``points`` with an arrow head at the last one."""
    xs, ys = zip(*points[:-1], strict=True)
    ax.plot(xs, ys, color=color, lw=lw, alpha=alpha, zorder=2, solid_capstyle="round")
    arrow(ax, points[-2], points[-1], color, lw, alpha)


def plus(ax, x, y, r=0.17, alpha=1.0):
    ax.add_patch(Circle((x, y), r, fc="white", ec=ARROW, lw=1.4, alpha=alpha, zorder=3))
    ax.plot([x - r * 0.6, x + r * 0.6], [y, y], color=ARROW, lw=1.4, alpha=alpha, zorder=4)
    ax.plot([x, x], [y - r * 0.6, y + r * 0.6], color=ARROW, lw=1.4, alpha=alpha, zorder=4)


def tensor(ax, x, y, name, symbols, numbers=None, size=9.0, ha="center"):
    """A tensor written as its name and shape: symbols (grey) over sizes (black)."""
    ax.text(x, y, name, ha=ha, va="bottom", fontsize=size, zorder=5)
    ax.text(
        x,
        y - 0.1,
        symbols,
        ha=ha,
        va="top",
        fontsize=size - 0.5,
        family=MONO,
        color="#555555",
        zorder=5,
    )
    if numbers:
        ax.text(x, y - 0.62, numbers, ha=ha, va="top", fontsize=size - 0.5, family=MONO, zorder=5)


def matrix(ax, x, y, w, h, colors, edge="#333333", lw=1.0):
    """A matrix drawn as ``len(colors)`` vertical stripes, lower-left corner at ``(x, y)``."""
    n = len(colors)
    for i, c in enumerate(colors):
        ax.add_patch(Rectangle((x + i * w / n, y), w / n, h, fc=c, ec="white", lw=0.6, zorder=3))
    ax.add_patch(Rectangle((x, y), w, h, fc="none", ec=edge, lw=lw, zorder=4))


# --------------------------------------------------------------------- the sub-layer unit

W, SUB_H, NORM_H, GAP, LEAD = 3.0, 0.85, 0.55, 0.22, 0.25


def unit_height(norm_first: bool, lead: float = LEAD) -> float:
    """Height of one residual sub-layer as :func:`unit` draws it."""
    if norm_first:
        return lead + NORM_H + GAP + SUB_H + 0.38 + 0.17
    return lead + SUB_H + GAP + NORM_H


def sublayer_centre(y0: float, norm_first: bool, lead: float = LEAD) -> float:
    """Height of the centre of the sub-layer block of a unit starting at ``y0``."""
    return y0 + lead + (NORM_H + GAP if norm_first else 0.0) + SUB_H / 2


def unit(ax, xc, y0, side, spec, norm_first, alpha_of, lead=LEAD, width=W):
    """One residual sub-layer, the stream arriving at ``(xc, y0)``; returns where it leaves.

    ``spec`` is ``(kind, title, korean, chapter)``; ``side`` (-1 or +1) puts the residual
    path left or right of the blocks; ``alpha_of`` maps a chapter to the opacity of its
    blocks (for a highlighted map; chapter ``None`` means untagged).
    """
    kind, title, korean, chapter = spec
    a_sub, a_norm = alpha_of(chapter), alpha_of(5 if chapter is not None else None)
    norm_tag = 5 if chapter is not None else None
    edge = xc + side * (width / 2 + 0.32)
    branch = y0 + min(0.12, lead / 2)
    ys = sublayer_centre(y0, norm_first, lead)
    if not norm_first:  # post-LN: Sublayer, then Add & Norm
        yn = ys + SUB_H / 2 + GAP + NORM_H / 2
        arrow(ax, (xc, y0), (xc, ys - SUB_H / 2), alpha=a_sub)
        block(ax, xc, ys, width, SUB_H, kind, title, korean, chapter, a_sub)
        arrow(ax, (xc, ys + SUB_H / 2), (xc, yn - NORM_H / 2), alpha=a_norm)
        block(ax, xc, yn, width, NORM_H, "norm", "Add & Norm", None, norm_tag, a_norm, size=9.5)
        join = (xc + side * width / 2, yn)
        top = yn + NORM_H / 2
    else:  # pre-LN: LayerNorm, then Sublayer, then the addition
        yn = y0 + lead + NORM_H / 2
        ya = ys + SUB_H / 2 + 0.38
        arrow(ax, (xc, y0), (xc, yn - NORM_H / 2), alpha=a_norm)
        block(ax, xc, yn, width, NORM_H, "norm", "LayerNorm", None, norm_tag, a_norm, size=9.5)
        arrow(ax, (xc, yn + NORM_H / 2), (xc, ys - SUB_H / 2), alpha=a_sub)
        block(ax, xc, ys, width, SUB_H, kind, title, korean, chapter, a_sub)
        arrow(ax, (xc, ys + SUB_H / 2), (xc, ya - 0.17), alpha=a_sub)
        plus(ax, xc, ya, alpha=a_norm)
        join = (xc + side * 0.17, ya)
        top = ya + 0.17
    path(ax, [(xc, branch), (edge, branch), (edge, join[1]), join], RESIDUAL, 1.6, a_norm)
    ax.add_patch(Circle((xc, branch), 0.05, color=RESIDUAL, alpha=a_norm, zorder=4))
    return top


# ------------------------------------------------------------------------- Figure 1


def alpha_of(highlight: Iterable[int] | int | None):
    if highlight is None:
        return lambda chapter: 1.0
    chosen = {highlight} if isinstance(highlight, int) else set(highlight)
    for c in chosen:
        check.int_in("highlight", c, 1, 8)
    return lambda chapter: 1.0 if chapter is None or chapter in chosen else FADED
