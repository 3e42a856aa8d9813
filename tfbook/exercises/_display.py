"""How the exercise engine shows its feedback: plain text everywhere, HTML in notebooks.

Everything printed is deterministic plain text (nbval compares it); in a Jupyter notebook the
same text is shown in a coloured box, and the progress table as an HTML table.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tfbook.exercises._advice import Mistake
from tfbook.exercises._compare import _describe
from tfbook.exercises._drivers import DRIVERS
from tfbook.exercises._run import Case

_STATUS_COLOURS = {
    "passed": ("#1b5e20", "#e8f5e9"),
    "failed": ("#b71c1c", "#ffebee"),
    "not attempted": ("#37474f", "#eceff1"),
    "error": ("#bf360c", "#fbe9e7"),
    "timeout": ("#bf360c", "#fbe9e7"),
}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _show(obj: Any) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover
        print(str(obj))
        return
    if get_ipython() is not None and get_ipython().__class__.__name__ == "ZMQInteractiveShell":
        display(obj)
    else:
        print(str(obj))


class _Table:
    def __init__(self, title: str, rows: list[tuple[str, str, str, str]]) -> None:
        self.title, self.rows = title, rows

    def __repr__(self) -> str:
        widths = [max(len(r[i]) for r in self.rows) for i in range(4)]
        lines = [self.title]
        for r in self.rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head, *body = self.rows
        out = [f"<p><b>{html.escape(self.title)}</b></p><table><thead><tr>"]
        out += [f"<th>{html.escape(c)}</th>" for c in head]
        out.append("</tr></thead><tbody>")
        for r in body:
            fg = _STATUS_COLOURS.get(r[3], ("#37474f", ""))[0]
            cells = [f"<td>{html.escape(c)}</td>" for c in r[:3]]
            cells.append(f'<td style="color:{fg};font-weight:bold">{html.escape(r[3])}</td>')
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
        return "".join(out)


STATUSES = ("passed", "failed", "not attempted", "error", "timeout")


@dataclass
class Result:
    """The outcome of checking one answer (plain text via ``str``, HTML in notebooks)."""

    qid: str
    title: str
    status: str
    points: float
    max_points: float
    detail: str = ""
    case: str = ""
    mistake: Mistake | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def text(self) -> str:
        head = f"[{self.qid}] {self.title}: "
        if self.status == "passed":
            return head + f"passed ({self.detail})"
        if self.status == "not attempted":
            return head + "not attempted (the function still raises NotImplementedError)"
        lines = [head + self.status.upper() + (f' on case "{self.case}"' if self.case else "")]
        lines += ["  " + line for line in self.detail.splitlines()]
        if self.mistake is not None:
            lines.append(f"  {self.mistake.heading}: {self.mistake.name}.")
            lines.append(f"  How to fix it: {self.mistake.fix}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        fg, bg = _STATUS_COLOURS[self.status]
        body = html.escape(self.text())
        return (
            f'<div class="tfbook-check tfbook-{self.status.replace(" ", "-")}" '
            f'style="border-left:4px solid {fg};background:{bg};color:{fg};'
            f'padding:6px 10px;margin:4px 0;font-family:monospace;white-space:pre-wrap">'
            f"{body}</div>"
        )


def call_text(
    name: str, case: Case, params: Sequence[str] | None, driver: str | None = None
) -> str:
    if driver is not None:  # the inputs are the driver's, not the answer's
        return f"{name}({', '.join(params or [])}), {DRIVERS[driver][1]}: {case.name}"
    parts = []
    for i, a in enumerate(case.args):
        label = params[i] + "=" if params and i < len(params) else ""
        parts.append(label + _describe(a))
    parts += [f"{k}={_describe(v)}" for k, v in case.kwargs.items()]
    return f"{name}({', '.join(parts)})"


def hint_text(qid: str, hints: Sequence[str], n: int, solutions: bool = True) -> str:
    """Hint ``n`` (from 1) of ``hints``, and how many remain (``solutions``: whether
    ``solution()`` shows one, so the last hint can point to it)."""
    left = len(hints) - n
    qn = qid.rsplit(".", 1)[-1]
    if left:
        more = f"{left} more: call ex.{qn}.hint() again"
    elif solutions and not _env_flag("TFBOOK_COURSE_MODE"):
        more = f"that was the last; ex.{qn}.solution() shows a solution"
    else:
        more = "that was the last"
    return f"[{qid}] Hint {n} of {len(hints)}: {hints[n - 1]} ({more})"
