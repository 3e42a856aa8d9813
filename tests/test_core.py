"""The preface's helpers: seeding, source display, Hangul plots, the module registry."""

from __future__ import annotations

import random
import warnings

import matplotlib
import numpy as np
import pytest
import torch

import tfbook
from tfbook import seed_everything, show_source
from tfbook.registry import MODULE_CHAPTER, chapter_of

matplotlib.use("Agg")


def test_version_is_a_string():
    assert isinstance(tfbook.__version__, str) and tfbook.__version__.count(".") == 2


def test_seed_everything_makes_python_numpy_and_torch_repeat():
    seed_everything(123)
    first = (random.random(), np.random.rand(), torch.rand(3))
    seed_everything(123)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2])
    assert torch.are_deterministic_algorithms_enabled()


def test_seed_everything_returns_a_seeded_generator():
    g1, g2 = seed_everything(7), seed_everything(7)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


@pytest.mark.parametrize(("bad", "error"), [(-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_seed_everything_rejects_bad_seeds(bad, error):
    with pytest.raises(error, match="seed"):
        seed_everything(bad)


def test_show_source_prints_and_returns_the_source(capsys):
    code = show_source(seed_everything)
    assert code.startswith("def seed_everything(")
    assert "def seed_everything(" in capsys.readouterr().out


def test_show_source_without_display_prints_nothing(capsys):
    assert "class" in show_source(tfbook._core._Source, display=False)
    assert capsys.readouterr().out == ""


def test_show_source_rejects_builtins():
    with pytest.raises(TypeError, match="no Python source"):
        show_source(len)


def _draw_hangul() -> list[str]:
    import matplotlib.pyplot as plt

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig, ax = plt.subplots()
        ax.set_title("나는 최근 파리 여행을 다녀왔다")
        ax.plot([-1, 1], [-2, 2])
        fig.canvas.draw()
        plt.close(fig)
    return [str(w.message) for w in caught if "Glyph" in str(w.message)]


def test_hangul_plot_has_no_missing_glyph_warning():
    import matplotlib as mpl

    with mpl.rc_context():
        from tfbook.plotting import setup

        family = setup()
        assert family == "NanumGothic"
        assert _draw_hangul() == []


def test_without_setup_hangul_is_missing_so_the_check_can_fail():
    import matplotlib as mpl

    with mpl.rc_context({"font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"]}):
        assert _draw_hangul(), "DejaVu Sans unexpectedly has Hangul: the test above proves nothing"


def test_registry_knows_every_module():
    import pkgutil

    names = ["tfbook"] + [
        m.name
        for m in pkgutil.walk_packages(tfbook.__path__, "tfbook.")
        if "exercises.ch" not in m.name
    ]
    for name in names:
        chapter_of(name)  # raises KeyError for an unregistered module
    assert chapter_of("tfbook.exercises.ch04") == 4
    assert MODULE_CHAPTER["tfbook.attention"] == 4


def test_registry_rejects_unknown_modules():
    with pytest.raises(KeyError, match="not in tfbook.registry"):
        chapter_of("numpy")
