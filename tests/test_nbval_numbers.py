"""The stored-output comparison (tfbook_tools.nbval_numbers) and the simulated machines.

Last-digit noise of another machine must pass; a wrong stored number must fail, here and
under every simulated variant (the end-to-end tests run nbval on a small notebook).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tfbook_tools.nbval_numbers import same_number, same_output, split_numbers
from tfbook_tools.variants import capabilities, main, matrix, variant_env

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------ reading the numbers


def test_text_and_numbers_are_split_where_a_reader_would() -> None:
    text, numbers = split_numbers("loss 0.0186; acc x[t-1] 0.995, 1e-3 -0.25 in ch3. Done 5.")
    assert numbers == ["0.0186", "1", "0.995", "1e-3", "-0.25", "5"]
    assert text == ["loss", ";accx[t-", "]", ",", "", "inch3.Done", "."]


@pytest.mark.parametrize(
    ("stored", "fresh"),
    [
        ("0.1234", "0.1235"),  # one unit in the last place: rounding moved
        ("0.1235", "0.1234"),
        ("7.1e-13", "7.2e-13"),
        ("-0.000", "0.000"),  # a sign of zero
        ("0.1", "0.0998"),  # %g printed a different number of places
        ("99.95", "99.94"),
        ("1.0", "1.0"),
    ],
)
def test_differences_the_printed_precision_cannot_show_pass(stored, fresh) -> None:
    assert same_number(stored, fresh)


@pytest.mark.parametrize(
    ("stored", "fresh"),
    [
        ("0.1234", "0.1236"),  # two units: a different value
        ("0.0186", "0.0180"),
        ("7.1e-13", "6.8e-13"),
        ("0.954", "0.969"),
        ("1999", "1998"),  # integers are counts: exact
        ("12", "12.0"),  # an integer against a decimal: exact
        ("0.5", "-0.5"),
        ("1e-3", "1e-5"),
    ],
)
def test_a_different_value_fails(stored, fresh) -> None:
    assert not same_number(stored, fresh)


def test_whole_outputs_compare_text_exactly_and_numbers_to_precision() -> None:
    assert same_output("acc 0.995 (n=512)\n", "acc 0.996 (n=512)\n")
    assert same_output("[ 0.000 -0.200]", "[-0.000 -0.201]")  # a column shifted by the sign
    assert not same_output("acc 0.995 (n=512)\n", "acc 0.995 (n=511)\n")
    assert not same_output("acc 0.995 (n=512)\n", "err 0.995 (n=512)\n")
    assert not same_output("a 0.5 b", "a 0.5 b 0.5")
    assert not same_output("0.5 True", "0.5 False")
    assert not same_output("ok.", "ok!")


# ------------------------------------------------------------------------ simulated machines


def test_variants_name_what_they_set() -> None:
    assert variant_env("native") == {}
    foreign = variant_env("foreign")
    assert foreign["ATEN_CPU_CAPABILITY"] == "default" and foreign["OMP_NUM_THREADS"] == "1"
    assert variant_env("default-4t") == {
        "ATEN_CPU_CAPABILITY": "default",
        "OMP_NUM_THREADS": "4",
        "MKL_NUM_THREADS": "4",
    }
    assert "default-1t" in matrix() and len(matrix()) == 3 * len(capabilities())


def test_an_unknown_variant_is_named_in_the_error(capsys) -> None:
    assert main(["env", "pentium-3t"]) == 2
    err = capsys.readouterr().err
    assert "variant must be native, foreign or one of" in err and "'pentium-3t'" in err


# A cell printing a float32 matrix product's mean to three places: its last bits differ between
# kernels and thread counts, its third place does not.
_CELL = """import torch
torch.manual_seed(0)
a = torch.randn(300, 300)
print(f"mean of diag(A A^T) {(a @ a.T).diagonal().mean().item():.3f} over {a.shape[0]} rows")
"""


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> dict[str, Path]:
    """The notebook executed here, and copies with a wrong number / wrong text stored."""
    folder = tmp_path_factory.mktemp("nbval")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(_CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    out = nb.cells[0].outputs[0]
    value = float(out.text.split()[4])
    paths = {"good": folder / "good.ipynb"}
    nbformat.write(nb, paths["good"])
    for name, text in {
        "number": out.text.replace(f"{value:.3f}", f"{value + 0.002:.3f}"),  # two units off
        "count": out.text.replace("300 rows", "299 rows"),
        "text": out.text.replace("over", "across"),
    }.items():
        assert text != out.text
        out.text = text
        paths[name] = folder / f"{name}.ipynb"
        nbformat.write(nb, paths[name])
        out.text = nbformat.read(paths["good"], as_version=4).cells[0].outputs[0].text
    return paths


def _nbval(paths: list[Path], variant: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tfbook_tools.variants", "run", variant, "--"]
    cmd += [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider"]
    cmd += ["-p", "tfbook_tools.nbval_numbers", "--nbval", "--nbval-current-env"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    cmd += [str(p) for p in paths]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=paths[0].parent, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["native", "foreign", "default-4t"])
def test_a_wrong_stored_output_fails_under_every_variant(stored, variant) -> None:
    """One nbval run per variant over the four notebooks: the good one passes, each wrong one
    (a number two units off, a count off by one, a changed word) fails."""
    run = _nbval(list(stored.values()), variant)
    failed = {
        line.split()[1].split("::")[0]
        for line in run.stdout.splitlines()
        if line.startswith("FAILED")
    }
    assert failed == {"number.ipynb", "count.ipynb", "text.ipynb"}, run.stdout[-3000:]
    assert "3 failed, 1 passed" in run.stdout and "Cell outputs differ" in run.stdout


@pytest.mark.slow
def test_a_kernel_under_a_threads_variant_runs_that_many_threads() -> None:
    """PyTorch caps OMP_NUM_THREADS at the cores; the variant's start-up file sets it anyway."""
    cell = "import torch; print(torch.get_num_threads(), torch.backends.cpu.get_cpu_capability())"
    script = (
        "import nbformat\n"
        "from nbclient import NotebookClient\n"
        f"nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell({cell!r})])\n"
        "NotebookClient(nb, timeout=120, kernel_name='python3').execute()\n"
        "print(nb.cells[0].outputs[0].text.strip())\n"
    )
    cmd = [sys.executable, "-m", "tfbook_tools.variants", "run", "default-4t", "--"]
    run = subprocess.run([*cmd, sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines()[-1] == "4 DEFAULT"
