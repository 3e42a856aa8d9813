"""Runs one prepared submission inside the grading sandbox (chapter 0).

``python -m tfbook_tools.sandbox_runner`` executes the code cells listed in
``$TFBOOK_NOTEBOOK`` (``{"cells": [source, ...]}``, written by the grader) one by one in an
IPython shell in this process: the execution model of a Jupyter kernel without the kernel's
ports and connection files, so there is nothing another process could connect to. What the
cells print is discarded. One JSON line per event goes to the standard output:
``{"e": "kernel"}`` once the shell is up, ``{"e": "start", "cell": i}``,
``{"e": "end", "cell": i, "error": name-or-null}``, ``{"e": "done"}`` at the end and
``{"e": "fail", "msg": ...}`` when the notebook could not be run.

These events only say how far the notebook got (status ``graded``/``error``); they carry no
score, and the grader treats them as untrusted.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time


def main() -> int:
    started = time.monotonic()
    tasks = os.environ.get("TFBOOK_MAX_TASKS", "")
    if tasks.isdigit():
        import resource

        resource.setrlimit(resource.RLIMIT_NPROC, (int(tasks), int(tasks)))
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # what the cells print goes nowhere, never into the events
    os.close(devnull)
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as we do

    clock, write, flush = time.monotonic, events.write, events.flush

    def emit(**event: object) -> None:
        # Formatted by hand: the notebook may patch json (or anything else it can reach).
        event["t"] = round(clock() - started, 3)
        parts = []
        for key, value in event.items():
            if isinstance(value, str):
                text = "".join(c for c in value if c.isalnum() or c in " _.:-()/,'")
                parts.append(f'"{key}": "{text}"')
            elif value is None:
                parts.append(f'"{key}": null')
            else:
                parts.append(f'"{key}": {value!r}')
        write("{" + ", ".join(parts) + "}\n")
        flush()

    try:
        work = os.environ.get("TFBOOK_WORKDIR", os.getcwd())
        for name in ("HOME", "TFBOOK_WORKDIR", "MPLCONFIGDIR", "IPYTHONDIR"):
            if os.environ.get(name):
                os.makedirs(os.environ[name], exist_ok=True)
        cache = os.path.join(os.environ.get("PYTHONPATH", ""), "mplconfig")
        if os.environ.get("MPLCONFIGDIR") and os.path.isdir(cache):
            for name in os.listdir(cache):
                target = os.path.join(os.environ["MPLCONFIGDIR"], name)
                shutil.copyfile(os.path.join(cache, name), target)
        with open(os.environ["TFBOOK_NOTEBOOK"], encoding="utf-8") as fh:
            cells = json.load(fh)["cells"]
        os.chdir(work)
        sys.path.insert(0, "")
        from IPython.core.interactiveshell import InteractiveShell

        class GradingShell(InteractiveShell):
            def enable_gui(self, gui=None):  # %matplotlib inline etc.: nothing to show here
                return None

        shell = GradingShell.instance(colors="NoColor")
        emit(e="kernel")
        for index, source in enumerate(cells):
            emit(e="start", cell=index)
            result = shell.run_cell(source, store_history=True)
            error = result.error_before_exec or result.error_in_exec
            emit(e="end", cell=index, error=type(error).__name__[:100] if error else None)
        emit(e="done")
    except BaseException as exc:  # noqa: BLE001 - reported to the grader as an event
        emit(e="fail", msg=f"{type(exc).__name__}: {exc}"[:300])
    events.flush()
    os._exit(0)  # no atexit handlers or threads of the notebook may delay the end


if __name__ == "__main__":
    sys.exit(main())
