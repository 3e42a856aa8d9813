"""The schematics of tfbook.diagrams: they draw, carry the labels the book's prose relies on,
and take their sizes from the configuration they are given (a changed config changes them)."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from tfbook import diagrams  # noqa: E402
from tfbook.attention import MultiHeadAttention  # noqa: E402
from tfbook.model import GPT, TransformerConfig  # noqa: E402
from tfbook.plotting import setup  # noqa: E402


@pytest.fixture(autouse=True)
def _book_style():
    setup()
    yield
    plt.close("all")


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def joined(fig) -> str:
    return "\n".join(texts(fig))


def small(**changes) -> TransformerConfig:
    base = {"vocab_size": 20, "d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 2}
    return TransformerConfig(**(base | changes))


def test_every_figure_draws_without_a_warning():
    """No missing glyph (Hangul, minus sign) and no other warning while drawing and rendering."""
    cfg = small()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figures = [
            diagrams.transformer_map(),
            diagrams.transformer_map(cfg, highlight=6),
            diagrams.multi_head_split(cfg),
            diagrams.residual_wiring(),
            diagrams.cross_attention_flow(cfg),
            diagrams.kv_cache_growth(cfg),
            diagrams.fine_tuning_ways(cfg),
        ]
        for fig in figures:
            fig.canvas.draw()  # renders every text: a missing glyph would warn here
    for fig in figures:
        width, _ = fig.get_size_inches()
        assert 6.0 <= width <= 7.0  # about the book's text column: shown near its own size


def test_the_map_names_every_block_of_figure_1_with_its_chapter():
    text = joined(diagrams.transformer_map())
    for block in (
        "Input embedding",
        "Output embedding",
        "Positional\nencoding",
        "Multi-head self-attention",
        "Masked self-attention",
        "Cross-attention",
        "Feed-forward",
        "Add & Norm",
        "Linear",
        "Softmax",
        "Encoder\n인코더",
        "Decoder\n디코더",
        "K, V",
        "Q",
        "멀티 헤드 셀프 어텐션",
        "포지셔널 인코딩",
    ):
        assert block in text, block
    tags = [t for t in texts(diagrams.transformer_map()) if t.startswith("ch. ")]
    assert sorted(set(tags)) == ["ch. 2", "ch. 3", "ch. 4", "ch. 5", "ch. 6", "ch. 7"]
    # the paper's base model when no configuration is given
    assert "N = 6 ×" in text and "d_model = 512, h = 8, d_ff = 2048, post-LN" in text


def test_the_map_reads_its_sizes_and_wiring_from_the_config():
    cfg = small(n_decoder_layers=3, norm_first=True, positional="learned")
    text = joined(diagrams.transformer_map(cfg))
    assert "N = 2 ×" in text and "N = 3 ×" in text and "N = 6 ×" not in text
    assert "d_model = 32, h = 4, d_ff = 64, pre-LN" in text
    assert "Add & Norm" not in text and text.count("LayerNorm") == 5 + 2  # 5 sub-layers, 2 final
    assert "Position\nembedding" in text and "Positional\nencoding" not in text
    # a model works as well as its config
    assert "N = 2 ×" in joined(diagrams.transformer_map(GPT(small())))


def test_no_label_overflows_its_block():
    """Titles are shrunk to fit their block: every text centred in a block stays inside it."""
    from matplotlib.patches import FancyBboxPatch

    for fig in (diagrams.transformer_map(), diagrams.transformer_map(small(norm_first=True))):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        blocks = [
            p.get_window_extent(renderer) for p in ax.patches if isinstance(p, FancyBboxPatch)
        ]
        checked = 0
        for text in ax.texts:
            box = text.get_window_extent(renderer)
            cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
            inside = [b for b in blocks if b.x0 < cx < b.x1 and b.y0 < cy < b.y1 and b.width < 400]
            if inside and text.get_text():
                block = min(inside, key=lambda b: b.width)
                assert block.x0 <= box.x0 and box.x1 <= block.x1, text.get_text()
                checked += 1
        assert checked >= 20


def test_a_highlighted_map_fades_the_other_chapters():
    fig = diagrams.transformer_map(highlight=6)
    alpha = {t.get_text(): t.get_alpha() for t in fig.findobj(Text)}
    assert alpha["Cross-attention"] in (None, 1.0) and alpha["Linear"] in (None, 1.0)
    assert alpha["Feed-forward"] < 0.5 and alpha["Softmax"] < 0.5
    with pytest.raises(ValueError, match="highlight must be an int in \\[1, 8\\], got 9"):
        diagrams.transformer_map(highlight=9)


def test_multi_head_shapes_come_from_d_model_and_h():
    text = joined(diagrams.multi_head_split())
    assert "(B, T, 512)" in text and "(B, 8, T, 64)" in text
    assert "(B, T, d_model)" in text and "(B, h, T, d_head)" in text
    changed = joined(diagrams.multi_head_split(small(d_model=48, n_heads=3)))
    assert "(B, T, 48)" in changed and "(B, 3, T, 16)" in changed and "(B, T, 512)" not in changed
    # a MultiHeadAttention module carries the same attributes
    assert "(B, 2, T, 8)" in joined(diagrams.multi_head_split(MultiHeadAttention(16, 2)))


def test_residual_wiring_shows_both_orders():
    fig = diagrams.residual_wiring()
    text = joined(fig)
    assert "Post-LN (the paper, BERT)" in text and "Pre-LN (GPT-2 and later)" in text
    assert text.count("Add & Norm") == 2 and text.count("LayerNorm") >= 3
    assert "Final LayerNorm" in text


def test_cross_attention_shapes_follow_the_lengths_and_the_config():
    text = joined(diagrams.cross_attention_flow(small(), source_len=7, target_len=9))
    for needle in (
        "(B, 7, 32)",
        "(B, 9, 32)",
        "= (B, 4, 9, 8)",
        "= (B, 4, 7, 8)",
        "= (B, 4, 9, 7)",
        "K, V",
        "Q",
        "N = 2 ×",
        "no causal mask",
    ):
        assert needle in text, needle
    other = joined(diagrams.cross_attention_flow(small(d_model=64, n_layers=3), 5, 4))
    assert "= (B, 4, 4, 5)" in other and "(B, 5, 64)" in other and "N = 3 ×" in other


def test_the_kv_cache_grows_one_column_per_step():
    fig = diagrams.kv_cache_growth(small(), prompt_len=3, new_tokens=3, batch=2)
    text = joined(fig)
    for t in (3, 4, 5, 6):
        assert f"= (2, 4, {t}, 8)" in text
    assert "2 × 2 × 32 = 128 numbers per token" in text
    assert "= (1, 8, 2, 64)" in joined(diagrams.kv_cache_growth(None, prompt_len=1, new_tokens=1))


def test_fine_tuning_ways_counts_lora_from_the_config():
    text = joined(diagrams.fine_tuning_ways(small(), r=4, n_classes=5))
    assert "A: 4 × 32" in text and "B: 32 × 4" in text and "W\n32 × 32\nfrozen" in text
    assert "trains r(d_in + d_out) = 256\ninstead of d_in·d_out = 1,024" in text
    assert "trained: the head: 165" in text  # 5 x (32 + 1)
    assert "pre-trained body\n2 layers" in text and "task head (5 classes)" in text
    default = joined(diagrams.fine_tuning_ways())
    assert "2,048" in default and "16,384" in default and "4 layers" in default


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="cfg must be a TransformerConfig .* without d_model"):
        diagrams.multi_head_split(SimpleNamespace(n_heads=4))
    with pytest.raises(ValueError, match="cfg.d_model must be divisible by cfg.n_heads"):
        diagrams.multi_head_split(SimpleNamespace(d_model=30, n_heads=4))
    with pytest.raises(ValueError, match="prompt_len must be an int in \\[1, 8\\], got 0"):
        diagrams.kv_cache_growth(small(), prompt_len=0)
    with pytest.raises(TypeError, match="source_len must be an int"):
        diagrams.cross_attention_flow(small(), source_len=2.5)
    with pytest.raises(ValueError, match="r must be an int in \\[1, 32\\], got 33"):
        diagrams.fine_tuning_ways(small(), r=33)
