"""nbval plug-in: stored outputs compared as text with numbers read to their printed precision.

nbval compares a cell's fresh output with the stored one character by character, so a value
printed as ``0.1235`` on one machine and ``0.1234`` on another (another CPU's kernels, another
BLAS, another thread count: the last bits of a float differ, and rounding to four places can
move the fourth digit by one) fails a cell whose claim is untouched. Loaded with
``pytest -p tfbook_tools.nbval_numbers`` (``make nbval`` does), this module makes that
comparison read each output as text and numbers:

- the text between numbers must match exactly (whitespace aside: a column of numbers may
  shift by one space when ``0.000`` becomes ``-0.000``);
- integers (counts, shapes, steps, ids) must match exactly;
- a number printed with a decimal point or an exponent may differ by **one unit in its last
  printed place** (by half of each one's unit when the two are printed to different places,
  as ``%g`` does: ``0.1`` against ``0.0998``).

Why one unit: a printed number stands for every value within half a unit of it, and two
values closer than one unit round to printed numbers at most one unit apart. So a one-unit
tolerance accepts every difference the printed precision cannot show, and rejects every
difference of two units or more. The printed
precision is therefore the claim: print a training loss to the digits that survive another
machine (or state a bound), and the comparison holds it to exactly that.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

import pytest

# A number as Python, NumPy and PyTorch print it: optional sign, digits with an optional
# fraction, an optional exponent. Not inside a word or a dotted name ("ch3", "x2", "t-1",
# "1.2.3", hex digits); a full stop after a number ends a sentence. NumPy's "1." is read as the
# integer 1 followed by text, so it is compared exactly.
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d+|\.\d+|\d+)(?:[eE][-+]?\d+)?(?!\w|\.\d)")
_SPACE = re.compile(r"\s+")


def split_numbers(text: str) -> tuple[list[str], list[str]]:
    """``text`` as the text between its numbers (whitespace removed) and the numbers."""
    numbers = _NUMBER.findall(text)
    between = [_SPACE.sub("", part) for part in _NUMBER.split(text)]
    return between, numbers


def _unit(number: str) -> Decimal | None:
    """One unit in the last printed place of ``number``; ``None`` for an integer."""
    mantissa, _, exponent = number.lower().partition("e")
    if "." not in mantissa and not exponent:
        return None
    decimals = len(mantissa.partition(".")[2])
    return Decimal(1).scaleb(-decimals + int(exponent or 0))


def same_number(stored: str, fresh: str) -> bool:
    """Whether two printed numbers agree to their printed precision (see the module doc)."""
    if stored == fresh:
        return True
    units = [_unit(stored), _unit(fresh)]
    if None in units:  # an integer is a count: exact
        return False
    try:
        return abs(Decimal(stored) - Decimal(fresh)) <= (units[0] + units[1]) / 2
    except InvalidOperation:
        return False


def same_output(stored: str, fresh: str) -> bool:
    """Whether ``fresh`` says what ``stored`` says: same text, numbers to printed precision."""
    if stored == fresh:
        return True
    text_s, numbers_s = split_numbers(stored)
    text_f, numbers_f = split_numbers(fresh)
    return (
        text_s == text_f
        and len(numbers_s) == len(numbers_f)
        and all(same_number(s, f) for s, f in zip(numbers_s, numbers_f, strict=True))
    )


class PrintedOutput(str):
    """A sanitized output whose ``==`` is :func:`same_output` (nbval compares with ``!=``)."""

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return same_output(str(self), str(other))
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = str.__hash__


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Wrap nbval's ``sanitize``: every string it hands to the comparison is a PrintedOutput."""
    option = config.option
    if not getattr(option, "nbval", False) and not getattr(option, "nbval_lax", False):
        return
    from nbval.plugin import IPyNbCell

    if getattr(IPyNbCell.sanitize, "_tfbook_numbers", False):
        return
    plain = IPyNbCell.sanitize

    def sanitize(self, s):
        s = plain(self, s)
        return PrintedOutput(s) if isinstance(s, str) else s

    sanitize._tfbook_numbers = True
    IPyNbCell.sanitize = sanitize
