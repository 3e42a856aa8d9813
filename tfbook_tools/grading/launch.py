"""Running one submission (chapter 0): its sandbox started and supervised, and how it ended.

:class:`Launcher` holds what every submission of a batch is started with (the site, the
corpus copy, the folders hidden from the sandbox, the limits); :meth:`Launcher.run` runs one
submission's prepared cells in :mod:`tfbook_tools.sandbox` (or, for trusted code only,
without isolation) and :meth:`Launcher.outcome` turns how it ended into a status and the
reasons a row gives.

Public API: :class:`Launcher`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tfbook_tools import sandbox as sb

__all__ = ["Launcher"]


@dataclass(frozen=True)
class Launcher:
    """How every submission of a batch is started."""

    site: Path  # :func:`tfbook_tools.grading.site.build_site`
    data: Path | None  # the sandboxes' $TFBOOK_DATA (a copy of the corpus), if any
    masks: tuple[Path, ...]  # folders hidden in the sandbox
    sandboxed: bool  # False only for trusted code
    timeout: float  # seconds, for each submission as a whole
    memory_mb: int  # for each submission as a whole, all its processes together

    def run(
        self,
        folder: Path,
        slot: int,
        watch: dict[int, Callable[[], bool]],
        abort: Callable[[], bool],
    ) -> sb.Run:
        """Run the cells in ``folder/in/cells.json``; ``slot`` picks the sandbox's uid, and
        ``watch`` maps file descriptors to read while it runs (the judge's link)."""
        tmp_mb = max(64, min(1024, self.memory_mb // 4))
        info_r: int | None = None
        if self.sandboxed:
            info_r, info_w = os.pipe()
            args = sb.command(
                site=self.site,
                indir=folder / "in",
                rundir=folder / "run",
                tmp_mb=tmp_mb,
                uid=65534 - slot,
                masks=list(self.masks),
                empty=folder / "empty",
                info_fd=info_w,
                data=self.data,
            )
            env = sb.environment(
                site=sb.SITE,
                notebook=sb.NOTEBOOK,
                socket=sb.SOCKET,
                home=sb.HOME,
                workdir=sb.WORKDIR,
                data=sb.DATA if self.data is not None else None,
            )
            pass_fds: tuple[int, ...] = (info_w,)
            cwd = None
            file_mb = 0
        else:
            work = folder / "work"
            work.mkdir()
            args = [sys.executable, "-m", "tfbook_tools.sandbox_runner"]
            env = sb.environment(
                site=str(self.site),
                notebook=str(folder / "in" / "cells.json"),
                socket=str(folder / "run" / "judge.sock"),
                home=str(work / "home"),
                workdir=str(work / "work"),
                data=str(self.data) if self.data is not None else None,
            )
            env.pop("TFBOOK_MAX_TASKS")
            pass_fds, cwd, file_mb = (), str(work), tmp_mb
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
                pass_fds=pass_fds,
                start_new_session=True,
                preexec_fn=sb.limit_preexec(self.memory_mb, file_mb),
            )
        finally:
            if self.sandboxed:
                os.close(info_w)
        try:
            return sb.supervise(
                proc,
                timeout=self.timeout,
                memory_mb=self.memory_mb,
                info_fd=info_r,
                watch=watch,
                abort=abort,
                sandboxed=self.sandboxed,
            )
        finally:
            for pipe in (proc.stdout, proc.stderr):
                pipe.close()
            if info_r is not None:
                os.close(info_r)

    def outcome(self, run: sb.Run, labels: list[str]) -> tuple[str, list[str]]:
        """The submission's status and reasons from how its run ended; ``labels`` name its
        cells (:class:`tfbook_tools.grading.restore.Prepared`)."""

        def label(cell: object) -> str:
            ok = isinstance(cell, int) and not isinstance(cell, bool) and 0 <= cell < len(labels)
            return labels[cell] if ok else "a cell"

        reasons: list[str] = []
        kinds = {e["e"] for e in run.events}
        started = [e.get("cell") for e in run.events if e["e"] == "start"]
        errors = [e for e in run.events if e["e"] == "end" and isinstance(e.get("error"), str)]
        for event in errors[:5]:
            reasons.append(f"{label(event.get('cell'))} raised {event['error'][:60]}")
        if len(errors) > 5:
            reasons.append(f"{len(errors) - 5} more cells raised")
        where = f" (it was running {label(started[-1])})" if started else ""
        if run.ended == "timeout":
            reasons.append(f"the notebook did not finish within {self.timeout:g} s{where}")
            return "timeout", reasons
        if run.ended == "memory":
            reasons.append(
                f"the submission used more than {self.memory_mb} MB of memory (all its "
                f"processes together) and was stopped{where}"
            )
            return "error", reasons
        if run.ended == "aborted":
            return "error", reasons + ["grading was interrupted"]
        if "done" in kinds:
            return ("error" if errors else "graded"), reasons
        if "dead" in kinds:
            reasons.append(f"the kernel died{where} (out of memory, or the process was killed)")
        elif "fail" in kinds:
            msg = next(str(e.get("msg"))[:200] for e in run.events if e["e"] == "fail")
            reasons.append(f"the notebook could not be run: {msg}")
        elif "kernel" not in kinds:
            tail = " ".join(run.stderr.strip().splitlines()[-3:])[-300:]
            reasons.append("the kernel did not start" + (f": {tail}" if tail else ""))
        else:
            reasons.append(f"the notebook stopped before its end{where} (its processes ended)")
        return "error", reasons
