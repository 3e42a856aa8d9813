"""Schematic drawings of the architecture, drawn by code (chapter 0, the book's figures).

One visual vocabulary for every schematic in the book: a colour per kind of block
(:data:`BLOCK_COLORS`), arrows for data, and tensors written with their shapes, first in the
book's symbols (``(B, T, d_model)``) and then with the sizes of the configuration drawn
(``(B, T, 512)``). The sizes are read from the object passed in (a
:class:`tfbook.model.TransformerConfig`, a model's ``cfg``, or anything with the same
attributes), so a drawing cannot disagree with the model it describes. The module imports no
model code: it only reads attributes, which keeps it usable from chapter 1 on.

Public API, one function per figure, each returning a matplotlib ``Figure``:

- :func:`transformer_map`: the paper's Figure 1 re-drawn, each block tagged with the chapter
  that builds it (chapters 1 and 6);
- :func:`multi_head_split`: the split into heads and the concatenation, with shapes (chapter 4);
- :func:`residual_wiring`: post-LN and pre-LN sub-layers side by side (chapter 5);
- :func:`cross_attention_flow`: queries from the decoder, keys and values from the encoder
  (chapter 6);
- :func:`kv_cache_growth`: the KV cache filled by the prompt, then one column per step
  (chapter 7);
- :func:`fine_tuning_ways`: full fine-tuning, a frozen body and LoRA side by side, with one
  adapted projection enlarged (chapter 9).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Rectangle

from tfbook import _draw as draw
from tfbook import _validate as check

__all__ = [
    "BLOCK_COLORS",
    "transformer_map",
    "multi_head_split",
    "residual_wiring",
    "cross_attention_flow",
    "kv_cache_growth",
    "fine_tuning_ways",
]

#: kind of block -> (edge colour, fill colour); edges from the Okabe and Ito palette.
BLOCK_COLORS: dict[str, tuple[str, str]] = draw.BLOCK_COLORS


_ENCODER_UNITS = [
    ("attention", "Multi-head self-attention", "멀티 헤드 셀프 어텐션", 4),
    ("ffn", "Feed-forward", "피드 포워드 신경망", 5),
]
_DECODER_UNITS = [
    ("attention", "Masked self-attention", "마스크드 셀프 어텐션", 4),
    ("cross", "Cross-attention", "크로스 어텐션", 6),
    ("ffn", "Feed-forward", "피드 포워드 신경망", 5),
]


def transformer_map(
    cfg: object | None = None, highlight: Iterable[int] | int | None = None
) -> Figure:
    """The paper's Figure 1 re-drawn, each block tagged with the chapter that builds it.

    Encoder (left) and decoder (right) stacks with their residual paths, Add & Norm (or, for
    a pre-LN configuration, LayerNorm before each sub-layer and a final LayerNorm after each
    stack), the masked self-attention and the cross-attention of the decoder, the
    feed-forward networks, the embeddings with positional encoding, and the output Linear
    and softmax.

    Args:
        cfg: a :class:`tfbook.model.TransformerConfig` (or a model with ``.cfg``) whose sizes,
            layer counts and wiring are drawn; ``None`` draws the paper's base model
            (``d_model = 512``, ``h = 8``, ``d_ff = 2048``, ``N = 6``, post-LN).
        highlight: a chapter (or several) whose blocks stay in full colour; the others fade.

    Returns:
        The figure, 6.7 inches wide (the book's text column at 100 dpi).

    Example:
        >>> from tfbook.model import TransformerConfig
        >>> fig = transformer_map(TransformerConfig(vocab_size=100, n_layers=2))
        >>> "N = 2 ×" in [t.get_text() for t in fig.axes[0].texts]
        True
    """
    if cfg is None:
        cfg = SimpleNamespace(d_model=512, n_heads=8, d_ff=2048, n_layers=6)
    s = draw.sizes(cfg)
    alpha_of = draw.alpha_of(highlight)
    xe, xd, width = 3.4, 8.6, 12.0  # centres of the encoder and decoder columns
    y_frame = 2.75
    final = 0.95 if s.final_norm else 0.0
    height = y_frame + 3 * draw.unit_height(s.norm_first) + 0.2 + final + 3.5
    fig, ax = draw.canvas(width, height, draw.BOOK_WIDTH / width)

    ax.text(
        width / 2,
        height - 0.2,
        "The Transformer (Vaswani et al. 2017, Figure 1)",
        ha="center",
        va="top",
        fontsize=12,
    )
    sizes = f"d_model = {s.d_model}, h = {s.n_heads}" + (f", d_ff = {s.d_ff}" if s.d_ff else "")
    ax.text(
        width / 2,
        height - 0.72,
        f"{sizes}, {'pre-LN' if s.norm_first else 'post-LN'}",
        ha="center",
        va="top",
        fontsize=9.5,
        family=draw.MONO,
    )

    # embeddings and positions
    a2, a3, a6, a7 = (alpha_of(c) for c in (2, 3, 6, 7))
    learned = s.positional == "learned"
    for xc, title, where in (
        (xe, "Input embedding", "Inputs (source tokens)"),
        (xd, "Output embedding", "Outputs, shifted right"),
    ):
        ax.text(xc, 0.25, where, ha="center", va="center", fontsize=9)
        draw.arrow(ax, (xc, 0.45), (xc, 0.85), alpha=a2)
        draw.block(ax, xc, 1.2, draw.W, 0.7, "embedding", title, "임베딩", 2, a2)
        draw.arrow(ax, (xc, 1.55), (xc, 1.98), alpha=a2)
        draw.plus(ax, xc, 2.15, alpha=a3)
        draw.arrow(ax, (xc, 2.32), (xc, y_frame), alpha=a3)
    xm = width / 2
    title = "Position\nembedding" if learned else "Positional\nencoding"
    draw.block(ax, xm, 2.15, 1.95, 0.72, "position", title, None, 3, a3, size=8.5)
    ax.text(
        xm,
        1.62,
        "위치 임베딩" if learned else "포지셔널 인코딩",
        ha="center",
        va="center",
        fontsize=8,
        color="#444444",
        alpha=a3,
    )
    draw.arrow(ax, (xm - 0.98, 2.15), (xe + 0.17, 2.15), alpha=a3)
    draw.arrow(ax, (xm + 0.98, 2.15), (xd - 0.17, 2.15), alpha=a3)

    # the two stacks
    outs = {}
    for name, korean, xc, units, side, n in (
        ("Encoder", "인코더", xe, _ENCODER_UNITS, -1, s.n_layers),
        ("Decoder", "디코더", xd, _DECODER_UNITS, +1, s.n_decoder),
    ):
        y = y_frame + 0.05
        starts = []
        for block in units:
            starts.append(y)
            y = draw.unit(ax, xc, y, side, block, s.norm_first, alpha_of)
        top = y + 0.15
        left, right = xc - draw.W / 2 - 0.55, xc + draw.W / 2 + 0.55
        ax.add_patch(
            FancyBboxPatch(
                (left, y_frame),
                right - left,
                top - y_frame,
                boxstyle="round,pad=0,rounding_size=0.2",
                fc="#F2F2F2",
                ec="#777777",
                lw=1.2,
                ls="--",
                alpha=a6,
                zorder=1,
            )
        )
        draw.tag(ax, right - 0.1, top, 6, a6)
        x_label, ha = (left - 0.1, "right") if side < 0 else (right + 0.1, "left")
        middle = (y_frame + top) / 2
        ax.text(
            x_label, middle + 0.25, f"{name}\n{korean}", ha=ha, va="bottom", fontsize=10, alpha=a6
        )
        ax.text(x_label, middle - 0.25, f"N = {n} ×", ha=ha, va="top", fontsize=11, alpha=a6)
        out = top
        draw.arrow(ax, (xc, y), (xc, top + (0.4 if s.final_norm else 0.0)), alpha=a6)
        if s.final_norm:
            draw.block(
                ax,
                xc,
                top + 0.4 + draw.NORM_H / 2,
                2.2,
                draw.NORM_H,
                "norm",
                "Final LayerNorm",
                None,
                6,
                a6,
                size=9.5,
            )
            out = top + 0.4 + draw.NORM_H
        outs[name] = (out, starts)

    # the encoder's output feeds every decoder layer's cross-attention (keys and values)
    enc_out, _ = outs["Encoder"]
    dec_out, dec_starts = outs["Decoder"]
    y_cross = draw.sublayer_centre(dec_starts[1], s.norm_first)
    route_y, x_in = enc_out + 0.45, xd - draw.W / 2
    red = BLOCK_COLORS["cross"][0]
    ax.plot(
        [xe, xe, xm, xm, x_in - 0.3],
        [enc_out, route_y, route_y, y_cross, y_cross],
        color=red,
        lw=1.8,
        alpha=a6,
        zorder=2,
    )
    draw.arrow(ax, (x_in - 0.4, y_cross), (x_in, y_cross), red, 1.8, a6)
    ax.text(
        xm - 0.1, y_cross + 0.1, "K, V", ha="right", va="bottom", fontsize=10, color=red, alpha=a6
    )
    ax.text(
        xd - 0.12, y_cross - draw.SUB_H / 2 - 0.06, "Q", ha="right", va="top", fontsize=10, alpha=a6
    )

    # the output head
    y_lin = dec_out + 0.6
    draw.arrow(ax, (xd, dec_out), (xd, y_lin - 0.27), alpha=a6)
    draw.block(ax, xd, y_lin, 2.2, 0.55, "output", "Linear", None, 6, a6, size=9.5)
    draw.arrow(ax, (xd, y_lin + 0.27), (xd, y_lin + 0.55), alpha=a7)
    draw.block(ax, xd, y_lin + 0.82, 2.2, 0.55, "output", "Softmax", None, 7, a7, size=9.5)
    draw.arrow(ax, (xd, y_lin + 1.1), (xd, y_lin + 1.35), alpha=a7)
    ax.text(xd, y_lin + 1.4, "Output probabilities", ha="center", va="bottom", fontsize=9, alpha=a7)
    return fig


# ------------------------------------------------------------------ multi-head attention


def _head_colors(n: int) -> list:
    """``n`` shades of the attention colour, one per head."""
    cmap = colormaps["Oranges"]
    return [cmap(0.25 + 0.55 * i / max(n - 1, 1)) for i in range(n)]


def _cards(ax, x, y, w, h, colors, spread=1.1):
    """Stacked matrices, one per head, the first in front; lower-left corner of the front one."""
    n = len(colors)
    step = spread / max(n - 1, 1)
    for i in reversed(range(n)):
        ax.add_patch(
            Rectangle(
                (x + i * step, y + i * step * 0.8),
                w,
                h,
                fc=colors[i],
                ec="#333333",
                lw=0.9,
                zorder=3 + (n - i) * 0.01,
            )
        )


def multi_head_split(cfg: object | None = None) -> Figure:
    """Multi-head attention as reshapes: split ``d_model`` into ``h`` heads, attend, concatenate.

    ``X (B, T, d_model)`` is projected to ``Q`` (and likewise ``K``, ``V``), viewed as
    ``(B, T, h, d_head)`` and transposed to ``(B, h, T, d_head)``; every head attends on its
    own slice; the heads are transposed back, concatenated to ``(B, T, d_model)`` and mixed
    by ``W^O``. Each tensor is written with the book's symbols and with ``cfg``'s sizes.

    Args:
        cfg: anything with ``d_model`` and ``n_heads`` (a config, a model, a
            :class:`tfbook.attention.MultiHeadAttention`); ``None`` is the paper's 512 and 8.

    Returns:
        The figure, 6.7 inches wide.

    Example:
        >>> from types import SimpleNamespace
        >>> fig = multi_head_split(SimpleNamespace(d_model=64, n_heads=4))
        >>> "(B, 4, T, 16)" in [t.get_text() for t in fig.axes[0].texts]
        True
    """
    s = draw.sizes(SimpleNamespace(d_model=512, n_heads=8) if cfg is None else cfg)
    fig, ax = draw.canvas(16.0, 10.4, draw.BOOK_WIDTH / 16.0)
    colors = _head_colors(s.n_heads)
    grey = ["#DDDDDD"]
    full = draw.shape("B", "T", "d_model"), draw.shape("B", "T", s.d_model)
    heads = draw.shape("B", "h", "T", "d_head"), draw.shape("B", s.n_heads, "T", s.d_head)
    ax.text(
        8.0,
        10.2,
        f"Multi-head attention: d_model = {s.d_model} split into h = {s.n_heads} "
        f"heads of d_head = {s.d_head}",
        ha="center",
        va="top",
        fontsize=11.5,
    )
    ax.text(
        8.0,
        9.6,
        "멀티 헤드 어텐션: 나누고, 헤드마다 어텐션, 다시 이어 붙이기",
        ha="center",
        va="top",
        fontsize=9.5,
        color="#444444",
    )

    # top row, left to right: X -> Q -> h heads -> attention
    y_top, mh = 6.0, 2.2
    draw.matrix(ax, 0.7, y_top, 1.3, mh, grey)
    draw.tensor(ax, 1.35, y_top - 0.45, "X", *full)
    draw.arrow(ax, (2.2, y_top + mh / 2), (3.6, y_top + mh / 2))
    ax.text(2.9, y_top + mh / 2 + 0.15, r"$\times W^Q$", ha="center", va="bottom", fontsize=10)
    draw.matrix(ax, 3.8, y_top, 1.3, mh, colors)
    draw.tensor(ax, 4.45, y_top - 0.45, "Q", *full)
    ax.text(
        4.45,
        y_top - 1.45,
        "K and V: the same,\nwith $W^K$ and $W^V$",
        ha="center",
        va="top",
        fontsize=8,
    )
    draw.arrow(ax, (5.3, y_top + mh / 2), (7.0, y_top + mh / 2))
    ax.text(6.15, y_top + mh / 2 + 0.15, "view,\ntranspose", ha="center", va="bottom", fontsize=9)
    _cards(ax, 7.2, y_top, 0.75, mh, colors)
    draw.tensor(ax, 8.1, y_top - 0.45, f"h = {s.n_heads} heads", *heads)
    draw.arrow(ax, (9.4, y_top + mh / 2), (10.6, y_top + mh / 2))
    draw.block(ax, 13.1, y_top + mh / 2, 5.0, 2.6, "attention", "", None)
    for dy, text, size, color in (
        (0.75, "Attention in every head", 10.5, "black"),
        (0.0, r"$\mathrm{softmax}(Q_i K_i^{\top} / \sqrt{d_{head}})\, V_i$", 10.5, "black"),
        (-0.8, "헤드마다 따로", 9.0, "#444444"),
    ):
        ax.text(
            13.1,
            y_top + mh / 2 + dy,
            text,
            ha="center",
            va="center",
            fontsize=size,
            color=color,
            zorder=5,
        )

    # bottom row, right to left: heads out -> concat -> W^O -> output
    y_bot = 1.4
    draw.arrow(ax, (13.1, y_top + mh / 2 - 1.3), (13.1, y_bot + mh + 1.35))
    _cards(ax, 12.3, y_bot, 0.75, mh, colors)
    draw.tensor(ax, 13.2, y_bot - 0.45, "one output per head", *heads)
    draw.arrow(ax, (11.9, y_bot + mh / 2), (10.3, y_bot + mh / 2))
    ax.text(11.1, y_bot + mh / 2 + 0.15, "transpose,\nconcat", ha="center", va="bottom", fontsize=9)
    draw.matrix(ax, 8.8, y_bot, 1.3, mh, colors)
    draw.tensor(ax, 9.45, y_bot - 0.45, "concatenated", *full)
    draw.arrow(ax, (8.6, y_bot + mh / 2), (7.4, y_bot + mh / 2))
    draw.block(ax, 6.3, y_bot + mh / 2, 1.9, 1.0, "attention", r"$\times W^O$", None, size=11)
    draw.arrow(ax, (5.25, y_bot + mh / 2), (4.1, y_bot + mh / 2))
    draw.matrix(ax, 2.6, y_bot, 1.3, mh, grey)
    draw.tensor(ax, 3.25, y_bot - 0.45, "output", *full)
    return fig


# ------------------------------------------------------------------- post-LN and pre-LN


def residual_wiring() -> Figure:
    """Two sub-layers (self-attention, feed-forward) wired post-LN and pre-LN, side by side.

    Post-LN (the paper, BERT): ``x <- LayerNorm(x + Sublayer(x))``, so every path from input
    to output crosses a LayerNorm. Pre-LN (GPT-2 and most later models):
    ``x <- x + Sublayer(LayerNorm(x))``, so the residual stream runs from input to output
    through additions only, and a final LayerNorm closes the stack. The black lines are the
    residual paths.

    Returns:
        The figure, 6.7 inches wide (the book's text column at 100 dpi).
    """
    units = [
        ("attention", "Self-attention", "셀프 어텐션", None),
        ("ffn", "Feed-forward", "피드 포워드 신경망", None),
    ]
    height = 1.2 + 2 * draw.unit_height(True) + 1.3 + 1.9
    fig, ax = draw.canvas(14.0, height, draw.BOOK_WIDTH / 14.0)
    panels = [
        (
            False,
            "Post-LN (the paper, BERT)",
            r"$x \leftarrow \mathrm{LayerNorm}(x + \mathrm{Sublayer}(x))$",
            "every path from\ninput to output\ncrosses a LayerNorm",
        ),
        (
            True,
            "Pre-LN (GPT-2 and later)",
            r"$x \leftarrow x + \mathrm{Sublayer}(\mathrm{LayerNorm}(x))$",
            "the residual stream:\nadditions only,\nfrom input to output",
        ),
    ]
    for i, (norm_first, title, formula, note) in enumerate(panels):
        xc = 2.3 + 6.5 * i
        ax.text(xc + 0.9, height - 0.2, title, ha="center", va="top", fontsize=11.5)
        ax.text(xc + 0.9, height - 0.85, formula, ha="center", va="top", fontsize=10)
        ax.text(xc, 0.3, "x  (B, T, d_model)", ha="center", va="center", fontsize=9)
        draw.arrow(ax, (xc, 0.55), (xc, 1.1))
        y = 1.1
        for block in units:
            y = draw.unit(ax, xc, y, -1, block, norm_first, draw.alpha_of(None))
        ax.text(
            xc + 1.75, y - 0.35, "× N layers", ha="left", va="top", fontsize=9.5, color="#222222"
        )
        if norm_first:
            draw.arrow(ax, (xc, y), (xc, y + 0.35))
            draw.block(
                ax,
                xc,
                y + 0.35 + draw.NORM_H / 2,
                3.0,
                draw.NORM_H,
                "norm",
                "Final LayerNorm",
                None,
                size=9.5,
            )
            y += 0.35 + draw.NORM_H
        draw.arrow(ax, (xc, y), (xc, y + 0.4))
        ax.text(xc, y + 0.48, "output  (B, T, d_model)", ha="center", va="bottom", fontsize=9)
        ax.text(
            xc + 1.75,
            1.1 + draw.unit_height(norm_first),
            note,
            ha="left",
            va="center",
            fontsize=9.5,
            color="#222222",
        )
    return fig


# ------------------------------------------------------------------------ cross-attention


def cross_attention_flow(
    cfg: object | None = None, source_len: int = 7, target_len: int = 9
) -> Figure:
    """One decoder layer's cross-attention: Q from the decoder, K and V from the encoder.

    The encoder's output (the *memory*, ``(B, T_k, d_model)``) is projected to keys and
    values, the decoder's stream ``(B, T_q, d_model)`` to queries; the weights
    ``(B, h, T_q, T_k)`` have one row per target position and one column per source
    position, with no causal mask; the output has the decoder's shape again.

    Args:
        cfg: anything with ``d_model``, ``n_heads`` and ``n_layers`` (``None``: the paper's).
        source_len: ``T_k``, the number of source tokens drawn.
        target_len: ``T_q``, the number of target tokens drawn.

    Returns:
        The figure, 6.7 inches wide.
    """
    s = draw.sizes(SimpleNamespace(d_model=512, n_heads=8, n_layers=6) if cfg is None else cfg)
    t_k = check.int_in("source_len", source_len, 1, 24)
    t_q = check.int_in("target_len", target_len, 1, 24)
    fig, ax = draw.canvas(16.0, 10.6, draw.BOOK_WIDTH / 16.0)
    ax.text(
        8.0,
        10.4,
        "Cross-attention: queries from the decoder, keys and values from the encoder",
        ha="center",
        va="top",
        fontsize=11.5,
    )
    ax.text(
        8.0,
        9.8,
        "크로스 어텐션 (인코더-디코더 어텐션)",
        ha="center",
        va="top",
        fontsize=9.5,
        color="#444444",
    )

    # encoder column (left) and decoder column (right)
    xe, xd = 2.0, 13.9
    ax.text(xe, 0.35, f"source: T_k = {t_k}", ha="center", va="center", fontsize=9)
    draw.arrow(ax, (xe, 0.6), (xe, 1.1))
    draw.block(ax, xe, 2.2, 3.2, 2.2, "tensor", f"Encoder\nN = {s.n_layers} ×", "인코더", size=10.5)
    draw.arrow(ax, (xe, 3.3), (xe, 4.2))
    draw.tensor(
        ax,
        xe,
        5.2,
        "memory m (인코더 출력)",
        draw.shape("B", "T_k", "d_model"),
        draw.shape("B", t_k, s.d_model),
    )
    ax.text(xd, 0.35, f"target: T_q = {t_q}", ha="center", va="center", fontsize=9)
    draw.arrow(ax, (xd, 0.6), (xd, 1.1))
    draw.block(
        ax, xd, 1.75, 3.4, 1.1, "attention", "Masked self-attention", "+ Add & Norm", size=10
    )
    draw.arrow(ax, (xd, 2.3), (xd, 4.2))
    draw.tensor(
        ax,
        xd,
        5.2,
        "decoder stream y",
        draw.shape("B", "T_q", "d_model"),
        draw.shape("B", t_q, s.d_model),
    )

    # the cross-attention block in the middle
    draw.block(ax, 8.0, 6.6, 7.2, 3.4, "cross", "", None)
    lines = [
        (
            r"$Q = y\,W^Q$",
            draw.shape("B", "h", "T_q", "d_head"),
            draw.shape("B", s.n_heads, t_q, s.d_head),
        ),
        (
            r"$K = m\,W^K,\ V = m\,W^V$",
            draw.shape("B", "h", "T_k", "d_head"),
            draw.shape("B", s.n_heads, t_k, s.d_head),
        ),
        ("weights", draw.shape("B", "h", "T_q", "T_k"), draw.shape("B", s.n_heads, t_q, t_k)),
    ]
    for j, (name, symbols, numbers) in enumerate(lines):
        y = 7.85 - 0.85 * j
        ax.text(4.7, y, name, ha="left", va="center", fontsize=9.5, zorder=5)
        ax.text(
            4.7,
            y - 0.36,
            f"{symbols} = {numbers}",
            ha="left",
            va="center",
            fontsize=8,
            family=draw.MONO,
            zorder=5,
        )
    ax.text(
        4.7,
        5.25,
        r"$\mathrm{softmax}(QK^{\top}/\sqrt{d_{head}})\,V$, no causal mask",
        ha="left",
        va="center",
        fontsize=9.5,
        zorder=5,
    )
    # the weights of one head: every target row sees every source column
    cell = min(1.9 / t_q, 1.1 / t_k, 0.2)
    gx, gy = 10.95 - t_k * cell / 2, 7.2 - t_q * cell / 2
    for r in range(t_q):
        for c in range(t_k):
            ax.add_patch(
                Rectangle(
                    (gx + c * cell, gy + (t_q - 1 - r) * cell),
                    cell,
                    cell,
                    fc=BLOCK_COLORS["cross"][0],
                    ec="white",
                    lw=0.5,
                    alpha=0.75,
                    zorder=5,
                )
            )
    ax.text(
        10.95,
        gy - 0.1,
        f"T_q × T_k\n= {t_q} × {t_k}",
        ha="center",
        va="top",
        fontsize=7.5,
        zorder=5,
    )

    # data flow
    red = BLOCK_COLORS["cross"][0]
    ax.plot([xe, xe], [5.6, 6.6], color=red, lw=1.8, zorder=2)
    draw.arrow(ax, (xe, 6.6), (4.4, 6.6), red, 1.8)
    ax.text((xe + 4.4) / 2, 6.75, "K, V", ha="center", va="bottom", fontsize=10, color=red)
    ax.plot([xd, xd], [5.6, 6.6], color=draw.ARROW, lw=1.6, zorder=2)
    draw.arrow(ax, (xd, 6.6), (11.6, 6.6), draw.ARROW, 1.6)
    ax.text((xd + 11.6) / 2, 6.75, "Q", ha="center", va="bottom", fontsize=10)
    draw.arrow(ax, (8.0, 8.3), (8.0, 8.9))
    ax.text(
        8.0,
        8.95,
        f"output {draw.shape('B', t_q, s.d_model)}: to Add & Norm, feed-forward",
        ha="center",
        va="bottom",
        fontsize=9,
        family=draw.MONO,
    )
    return fig


# ------------------------------------------------------------------------------ KV cache


def kv_cache_growth(
    cfg: object | None = None, prompt_len: int = 3, new_tokens: int = 3, batch: int = 1
) -> Figure:
    """One layer's KV cache: filled by the prompt, then one column of K and V per step.

    The prompt's keys and values are computed in one call; afterwards each step feeds one
    token, appends its key and value (the dark column) and attends with its query over every
    cached key. Both tensors are ``(B, h, T, d_head)``, one pair per layer.

    Args:
        cfg: anything with ``d_model``, ``n_heads`` and ``n_layers`` (``None``: the paper's).
        prompt_len: tokens of the prompt (the first panel).
        new_tokens: generated tokens, one panel each.
        batch: ``B`` written in the shapes.

    Returns:
        The figure, 6.7 inches wide.
    """
    s = draw.sizes(SimpleNamespace(d_model=512, n_heads=8, n_layers=6) if cfg is None else cfg)
    prompt_len = check.int_in("prompt_len", prompt_len, 1, 8)
    new_tokens = check.int_in("new_tokens", new_tokens, 1, 4)
    batch = check.positive_int("batch", batch)
    panels = 1 + new_tokens
    panel_w = max(4.0, 0.45 * (prompt_len + new_tokens) + 1.4)
    width = panels * panel_w
    fig, ax = draw.canvas(width, 8.4, draw.BOOK_WIDTH / width)
    edge_k, fill_k = BLOCK_COLORS["attention"]
    edge_v, fill_v = BLOCK_COLORS["cross"]
    ax.text(
        width / 2,
        8.25,
        "The KV cache (KV 캐시) of one layer, step by step",
        ha="center",
        va="top",
        fontsize=11.5,
    )
    col, gh = 0.42, 1.3
    for p in range(panels):
        t = prompt_len + p
        fresh = range(prompt_len) if p == 0 else range(t - 1, t)
        x0 = p * panel_w + 0.9
        head = f"prompt: {prompt_len} tokens" if p == 0 else f"step {p}: +1 token"
        ax.text(p * panel_w + panel_w / 2, 7.4, head, ha="center", va="center", fontsize=9.5)
        for name, y, edge, fill in (("K", 4.1, edge_k, fill_k), ("V", 1.9, edge_v, fill_v)):
            for j in range(t):
                new = j in fresh
                ax.add_patch(
                    Rectangle(
                        (x0 + j * col, y),
                        col,
                        gh,
                        fc=edge if new else fill,
                        ec="#333333" if new else edge,
                        lw=1.2 if new else 0.8,
                        zorder=3,
                    )
                )
            ax.text(x0 - 0.15, y + gh / 2, name, ha="right", va="center", fontsize=10)
        # the newest query reads every cached key
        qx = x0 + (t - 0.5) * col
        ax.add_patch(
            Rectangle(
                (qx - col / 2, 6.1),
                col,
                0.55,
                fc=BLOCK_COLORS["attention"][0],
                ec="#333333",
                lw=1.2,
                zorder=3,
            )
        )
        ax.text(qx + col / 2 + 0.08, 6.38, "q", ha="left", va="center", fontsize=10)
        for j in range(t):
            ax.plot([qx, x0 + (j + 0.5) * col], [6.1, 4.1 + gh], color="#666666", lw=0.8, zorder=2)
        ax.text(
            p * panel_w + panel_w / 2,
            1.55,
            f"{draw.shape('B', 'h', 'T', 'd_head')}\n= {draw.shape(batch, s.n_heads, t, s.d_head)}",
            ha="center",
            va="top",
            fontsize=8.5,
            family=draw.MONO,
        )
    per_token = 2 * s.n_layers * s.d_model
    ax.text(
        width / 2,
        0.05,
        f"one K and one V in each of n_layers = {s.n_layers} layers: 2 × {s.n_layers} × "
        f"{s.d_model} = {per_token:,} numbers per token",
        ha="center",
        va="bottom",
        fontsize=9,
    )
    return fig


_FROZEN = ("#8C8C8C", "#E6E6E6")  # edge, fill of a block whose weights do not change


def _box(ax, x, y, w, h, colors, text, size=9.5, hatch=None):
    """A rounded block centred at ``(x, y)`` in ``colors`` (edge, fill) with ``text``."""
    edge, fill = colors
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0,rounding_size=0.12",
            fc=fill,
            ec=edge,
            lw=1.6,
            hatch=hatch,
            zorder=3,
        )
    )
    draw.fit(ax.text(x, y, text, ha="center", va="center", fontsize=size, zorder=4), w)


def fine_tuning_ways(cfg: object | None = None, r: int = 8, n_classes: int = 3) -> Figure:
    """Three ways to fine-tune a pre-trained body with a task head, and one LoRA layer.

    Grey blocks keep their pre-trained weights, coloured ones are trained. Full fine-tuning
    trains everything; the frozen body trains only the head; LoRA freezes every pre-trained
    weight and trains, beside each adapted projection ``W`` (``d_model x d_model``), two thin
    matrices ``A`` (``r x d_model``) and ``B`` (``d_model x r``, zero at the start) whose
    product, scaled by ``alpha / r``, is added to ``W``'s output. The numbers are read from
    ``cfg``.

    Args:
        cfg: anything with ``d_model``, ``n_heads`` and ``n_layers`` (``None``: chapter 8's
            GPT, 128 wide with 4 layers).
        r: the adapters' rank.
        n_classes: the head's outputs ``C``.

    Returns:
        The figure, 6.7 inches wide.
    """
    s = draw.sizes(SimpleNamespace(d_model=128, n_heads=4, n_layers=4) if cfg is None else cfg)
    r = check.int_in("r", r, 1, s.d_model)
    n_classes = check.positive_int("n_classes", n_classes)
    trained = BLOCK_COLORS["attention"]
    width, height = 17.0, 9.4
    fig, ax = draw.canvas(width, height, draw.BOOK_WIDTH / width)
    panels = (
        ("full fine-tuning", trained, trained, "every weight"),
        ("frozen body + head", _FROZEN, trained, f"the head: {n_classes * (s.d_model + 1):,}"),
        ("LoRA", _FROZEN, trained, "A, B and the head"),
    )
    for i, (title, body, head, what) in enumerate(panels):
        x = 1.75 + i * 3.75
        ax.text(x, 9.2, title, ha="center", va="top", fontsize=10.5)
        ax.text(x, 0.1, f"trained: {what}", ha="center", va="bottom", fontsize=8.5)
        ax.text(x, 1.05, "token ids", ha="center", va="center", fontsize=9)
        draw.arrow(ax, (x, 1.3), (x, 1.75))
        _box(ax, x, 3.75, 2.9, 4.0, body, f"pre-trained body\n{s.n_layers} layers")
        if i == 2:  # one adapter beside each layer's projections
            for k in range(s.n_layers):
                y = 2.15 + (k + 0.5) * 3.2 / s.n_layers
                ax.add_patch(
                    Rectangle((x + 1.5, y - 0.16), 0.3, 0.32, fc=trained[0], ec="#333333", lw=0.8)
                )
        draw.arrow(ax, (x, 5.75), (x, 6.25))
        _box(ax, x, 6.7, 2.9, 0.9, head, f"task head ({n_classes} classes)")
        draw.arrow(ax, (x, 7.15), (x, 7.65))
        ax.text(x, 7.9, "logits", ha="center", va="center", fontsize=9)
    for k, (colors, label) in enumerate(((_FROZEN, "kept frozen"), (trained, "trained"))):
        ax.add_patch(Rectangle((0.3 + 3.2 * k, 8.35), 0.4, 0.3, fc=colors[1], ec=colors[0]))
        ax.text(0.85 + 3.2 * k, 8.5, label, ha="left", va="center", fontsize=8.5)
    # the LoRA layer, enlarged
    x0, xc = 11.75, 14.45
    ax.plot([9.25 + 0.3, x0], [4.4, 7.5], color="#999999", lw=0.8, ls="--", zorder=1)
    ax.plot([9.25 + 0.3, x0], [4.05, 1.3], color="#999999", lw=0.8, ls="--", zorder=1)
    ax.add_patch(Rectangle((x0, 1.3), 5.4, 6.2, fc="#FAFAFA", ec="#999999", lw=0.8, zorder=0))
    ax.text(xc, 9.2, "one adapted projection", ha="center", va="top", fontsize=10.5)
    d = s.d_model
    ax.text(
        xc,
        1.6,
        f"x: {draw.shape('...', d)}",
        ha="center",
        va="center",
        fontsize=8.5,
        family=draw.MONO,
    )
    xw, xa = x0 + 1.35, x0 + 4.05
    draw.path(ax, [(xc, 1.8), (xc, 2.05), (xw, 2.05), (xw, 2.5)])
    draw.path(ax, [(xc, 2.05), (xa, 2.05), (xa, 2.5)])
    _box(ax, xw, 3.9, 2.1, 2.8, _FROZEN, f"W\n{d} × {d}\nfrozen", size=9)
    for y, text in ((2.5, f"A: {r} × {d}"), (3.5, f"B: {d} × {r}")):
        ax.add_patch(Rectangle((xa - 0.8, y), 1.6, 0.6, fc=trained[1], ec=trained[0], lw=1.4))
        draw.fit(ax.text(xa, y + 0.3, text, ha="center", va="center", fontsize=8.5), 1.6)
    draw.arrow(ax, (xa, 3.1), (xa, 3.5))
    ax.text(xa, 4.35, "starts at 0", ha="center", va="center", fontsize=7.5, color="#555555")
    draw.path(ax, [(xa, 4.6), (xa, 6.0), (xc + 0.17, 6.0)])
    ax.text(xa + 0.1, 5.3, "× α/r", ha="left", va="center", fontsize=8.5)
    draw.path(ax, [(xw, 5.3), (xw, 6.0), (xc - 0.17, 6.0)])
    draw.plus(ax, xc, 6.0)
    draw.arrow(ax, (xc, 6.17), (xc, 6.8))
    ax.text(xc, 7.05, "y", ha="center", va="center", fontsize=9.5)
    ax.text(
        xc,
        0.1,
        f"trains r(d_in + d_out) = {r * 2 * d:,}\ninstead of d_in·d_out = {d * d:,}",
        ha="center",
        va="bottom",
        fontsize=8.5,
    )
    return fig
