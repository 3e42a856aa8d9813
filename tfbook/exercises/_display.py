"""How the exercise engine shows its feedback: plain text everywhere, HTML in notebooks.

Everything printed is deterministic plain text (nbval compares it); in a Jupyter notebook the
same text is shown in a coloured box, and the progress table as an HTML table.
"""

from __future__ import annotations

import html
import os
from typing import Any

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
