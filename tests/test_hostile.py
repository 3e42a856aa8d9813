"""`tfbook grade` attacked as a determined student would attack it (issue 13).

One batch of hostile submissions built from the ch00 student edition, graded in the
bubblewrap sandbox next to honest "victim" submissions, by the real command line. Every
class of the issue is here:

- forged scores: the answer bound to the reference, the solution source executed or stolen
  from the installed files, the expected value read from the checker's frames, comparison
  functions patched to always agree, ``json`` patched to write 100 points, hand-made messages
  to the grader, a results file written before the kernel kills itself;
- damage to other students: the installed code, its bytecode caches, the master notebooks,
  an IPython start-up file, a ``.pth`` in the virtualenv, another submission, a process that
  outlives its notebook, an attack on the kernel graded at the same time, the capstone
  corpus (written, deleted, renamed: the grader's corpus is a small fake one, bound
  read-only into every sandbox as chapter 8 needs it);
- the whole batch lost: odd metadata, JSON nested 100,000 deep, malformed messages to the
  judge, a notebook that kills every process it can see;
- limits: many cells that each stay under the time limit, four children of 700 MB under a
  2 GB limit, a disk filled through ``/tmp``, a 17 MB notebook;
- smaller: names starting with ``-`` and ``=``, nbformat 3, the unchanged master.

After the batch the submissions, the master notebooks, the grader's corpus and the installed
code (``tfbook``, ``tfbook_tools``, bytecode caches, the virtualenv's ``.pth`` files) must be
byte-identical.
Printing the table of the issue note: ``pytest tests/test_hostile.py -s -k table``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import nbformat
import pytest
from _grading_helpers import (
    FAKE_WORKS,
    MASTER,
    QIDS,
    ROOT,
    append,
    corpus_attack,
    fake_corpus,
    insert_after_check,
    insert_after_import,
    read_rows,
    set_solution,
    sha,
    solved,
    student,
    tree_hashes,
)

from tfbook_tools.cli import main as cli_main
from tfbook_tools.sandbox import sandbox_problem

TIMEOUT = 40
MEMORY_MB = 2048
MARK = "tfbook-hostile-marker"
DAEMON = "tfbook-hostile-daemon"
SITE_PACKAGES = sysconfig.get_paths()["purelib"]
REAL_HOME = os.path.expanduser("~")
STARTUP = Path(REAL_HOME) / ".ipython" / "profile_default" / "startup" / "00-tfbook-hostile.py"
PTH = Path(SITE_PACKAGES) / "zz_tfbook_hostile.pth"

needs_sandbox = pytest.mark.skipif(
    sandbox_problem() is not None, reason=f"no sandbox here: {sandbox_problem()}"
)

# --------------------------------------------------------------------------- payloads

FORGE_ANSWERS = {
    # q1: bind the answer to the package's own reference, any way it might be reachable
    "ch00.q1": """def softmax(x, dim=-1):
    raise NotImplementedError


for get in (
    lambda: ex.q1.reference,
    lambda: ex.q1._reference,
    lambda: vars(ex.q1)["_reference"],
    lambda: ex.softmax,
    lambda: ex.EXERCISES["ch00.q1"].reference,
    lambda: ex.q1.library,
):
    try:
        softmax = get()
        break
    except Exception:
        pass""",
    # q2: execute solution_source(), or load the real exercise module from its file
    "ch00.q2": f"""import importlib.util, os

def one_hot(ids, vocab_size):
    raise NotImplementedError


try:
    exec(ex.q2.solution_source())
except Exception:
    pass
for path in [{str(ROOT / "tfbook" / "exercises" / "ch00.py")!r},
             os.path.join(os.path.dirname(ex.__file__), "ch00.py")]:
    try:
        spec = importlib.util.spec_from_file_location("stolen", path)
        stolen = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(stolen)
        one_hot = stolen.one_hot
        break
    except Exception:
        pass""",
    # q3: read the expected value from the checker's stack frames or from the heap
    "ch00.q3": """import gc, inspect

def masked_mean(x, lengths):
    for info in inspect.stack():
        for name, value in info.frame.f_locals.items():
            if name in ("expected", "want", "reference", "result") and torch.is_tensor(value):
                if value.shape == (x.shape[0], x.shape[2]):
                    return value
    for obj in gc.get_objects():
        if getattr(obj, "__name__", "") == "masked_mean" and obj is not masked_mean:
            if "tfbook.exercises" in str(getattr(obj, "__module__", "")):
                return obj(x, lengths)
    return x.sum(dim=1) * 0""",
    # q4: return an object that claims to equal everything
    "ch00.q4": """class Liar(int):
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = int.__hash__


class Anything:
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False


def linear_parameter_count(d_in, d_out, bias=True):
    return Anything()""",
}

PATCH_COMPARISONS = """import math
import numpy as np
import torch
import tfbook.exercises._engine as engine

always = lambda *a, **k: True
np.isclose = lambda a, b, **k: np.ones(np.broadcast(np.asarray(a), np.asarray(b)).shape, bool)
np.allclose = always
np.array_equal = always
math.isclose = always
torch.allclose = always
torch.equal = always
engine.compare = lambda *a, **k: None
engine._compare_arrays = lambda *a, **k: None
engine.Question.compare = lambda self, expected, got: None"""

WRONG = {
    "ch00.q1": "def softmax(x, dim=-1):\n    return torch.zeros_like(x)",
    "ch00.q2": "def one_hot(ids, vocab_size):\n    return torch.zeros(*ids.shape, vocab_size)",
    "ch00.q3": "def masked_mean(x, lengths):\n    return x.sum(dim=1) * 0",
    "ch00.q4": "def linear_parameter_count(d_in, d_out, bias=True):\n    return 0",
}

PATCH_JSON = """import json

FAKE = json.dumps({q: {"status": "passed", "points": 100, "text": "passed"}
                   for q in ["ch00.q1", "ch00.q2", "ch00.q3", "ch00.q4"]})
json.dumps = lambda *a, **k: FAKE
json.dump = lambda obj, fh, *a, **k: fh.write(FAKE)
json.JSONEncoder.encode = lambda self, o: FAKE"""

RPC = """import json, os, socket, struct

PATH = os.environ.get("TFBOOK_GRADER_SOCKET", "/run/tfbook/judge.sock")


def frame(data):
    return struct.pack(">Q", len(data)) + data


def exchange(*parts):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    replies = []
    try:
        s.connect(PATH)
        for part in parts:
            s.sendall(part if isinstance(part, bytes) else frame(json.dumps(part).encode()))
            try:
                header = s.recv(8)
                replies.append(s.recv(struct.unpack(">Q", header)[0]) if len(header) == 8 else b"")
            except Exception as exc:
                replies.append(repr(exc))
    except Exception as exc:
        replies.append(repr(exc))
    finally:
        s.close()
    return replies
"""

FORGED_RPC = (
    RPC
    + """
for qid in ["ch00.q1", "ch00.q2", "ch00.q3", "ch00.q4"]:
    exchange({"op": "check", "qid": qid, "status": "passed", "points": 100})
    exchange({"op": "result", "qid": qid, "status": "passed", "points": 100})
    exchange({"op": "start", "kind": "check", "qid": qid, "callable": True, "name": "x"},
             {"op": "answer", "status": "passed", "points": 100,
              "outcomes": [{"kind": "passed", "points": 100}]})
    exchange({"op": "start", "kind": "check", "qid": qid, "callable": False, "name": "x",
              "points": 100},
             {"op": "answer", "value": {"t": "float", "v": "nan"}, "points": 100,
              "status": "passed"})"""
)

MALFORMED_RPC = (
    RPC
    + """
start = {"op": "start", "kind": "check", "qid": "ch00.q4", "callable": True, "name": "f"}
bad_values = [
    {"t": "tensor", "dtype": "float32", "shape": [1000000000], "b64": "AAAA"},
    {"t": "tensor", "dtype": "object", "shape": [1], "b64": "AAAA"},
    {"t": "pickle", "v": "gASVAAAAAAAAAAB9lC4="},
    {"t": "remote", "id": 1, "callable": True},
    {"t": "dict", "v": [[{"t": "list", "v": []}, 1]]},
    {"t": "bigint", "v": "9" * 4999},
    ["raw", "list"],
]
exchange(b"")
exchange(struct.pack(">Q", 1 << 60))
exchange(frame(b"{not json"))
exchange(frame(b"[" * 100000 + b"]" * 100000))
exchange(frame(json.dumps({"op": "start", "kind": "check", "qid": ["ch00.q1"]}).encode()))
exchange(frame(json.dumps({"no": "op"}).encode()))
for value in bad_values:
    exchange(start, {"op": "answer", "outcomes": [{"kind": "returned", "value": value}]})
exchange(start, {"op": "answer", "outcomes": [{"kind": "returned", "value": 1}] * 1000})
exchange(start, {"op": "answer", "outcomes": "all passed"})
exchange(start, {"op": "call", "id": 1, "method": "__class__", "args": {"t": "list", "v": []}})
exchange(start, {"op": "getattr", "id": 99, "name": "x"})"""
)

RESULTS_FILE_THEN_KILL = f"""import glob, json, os

fake = {{q: {{"status": "passed", "points": 100, "text": "passed"}}
        for q in ["ch00.q1", "ch00.q2", "ch00.q3", "ch00.q4"]}}
folders = [os.getcwd(), os.path.expanduser("~"), "/tmp", {REAL_HOME!r}]
folders += glob.glob("/tmp/tfbook-grade-*") + glob.glob("/tmp/tfbook-grade-*/*")
for folder in folders:
    try:
        with open(os.path.join(folder, ".tfbook-results.json"), "w") as fh:
            json.dump(fake, fh)
    except Exception:
        pass
os.kill(os.getpid(), 9)"""


def tamper(out: Path, victims: list[Path], folder: Path, masters: Path) -> str:
    """Write to everything another submission or the grader relies on (each guarded)."""
    return f"""import glob, os, sys, sysconfig
import tfbook.exercises._engine as engine

MARK = "\\n# {MARK}\\n"
here = os.path.dirname(engine.__file__)
repo = {str(ROOT)!r}
appended = [engine.__file__, os.path.join(here, "ch00.py"), os.path.join(here, "__init__.py"),
            repo + "/tfbook/exercises/_engine.py", repo + "/tfbook/exercises/ch00.py",
            repo + "/tfbook_tools/judge.py", repo + "/tfbook_tools/grading/batch.py",
            repo + "/book/00_exercises.ipynb", {str(out)!r}]
appended += glob.glob(repo + "/book/*.ipynb") + glob.glob({str(masters)!r} + "/*.ipynb")
appended += glob.glob("/opt/tfbook/site/**/*.py", recursive=True)
for target in appended:
    try:
        with open(target, "a") as fh:
            fh.write(MARK)
    except Exception:
        pass
for target in {[str(v) for v in victims]!r} + glob.glob({str(folder)!r} + "/*.ipynb"):
    try:
        with open(target, "w") as fh:
            fh.write("overwritten")
    except Exception:
        pass
for folder in [os.path.join(here, "__pycache__"), repo + "/tfbook/exercises/__pycache__",
               repo + "/tfbook_tools/__pycache__"]:
    try:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "_engine.cpython-311.pyc"), "wb") as fh:
            fh.write(MARK.encode())
    except Exception:
        pass
for site in {{{SITE_PACKAGES!r}, sysconfig.get_paths()["purelib"], *sys.path}}:
    try:
        with open(os.path.join(site or ".", "zz_tfbook_hostile.pth"), "w") as fh:
            fh.write(MARK)
    except Exception:
        pass
for home in [os.path.expanduser("~"), {REAL_HOME!r}, os.environ.get("IPYTHONDIR", "")]:
    for sub in [".ipython/profile_default/startup", "profile_default/startup"]:
        try:
            folder = os.path.join(home, sub)
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "00-tfbook-hostile.py"), "w") as fh:
                fh.write(MARK)
        except Exception:
            pass"""


CROSS_KERNEL = f"""import glob, os, signal, socket, time

found = []
end = time.time() + 8
while time.time() < end:
    for pattern in ["~/.local/share/jupyter/runtime/kernel-*.json",
                    {REAL_HOME!r} + "/.local/share/jupyter/runtime/kernel-*.json",
                    "/tmp/*.json", "/tmp/tfbook-grade-*/sub-*/run/judge.sock",
                    "/run/user/*/jupyter/*.json", "/run/tfbook/*"]:
        found += glob.glob(os.path.expanduser(pattern))
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                try:
                    os.kill(int(pid), sig)
                except Exception:
                    pass
    for port in range(1024, 1100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.01).close()
            found.append(port)
        except Exception:
            pass
    for path in found:
        if isinstance(path, str) and path.endswith("judge.sock"):
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(path)
                s.sendall(b"garbage" * 100)
                s.close()
            except Exception:
                pass
    time.sleep(0.5)"""


def outliving(out: Path, victim: Path) -> str:
    code = (
        f"import time\\n# {DAEMON}\\nend = time.time() + 25\\nwhile time.time() < end:\\n"
        f"    for p in [{str(out)!r}, {str(victim)!r}]:\\n"
        "        try:\\n            open(p, 'a').write('hostile')\\n"
        "        except Exception:\\n            pass\\n    time.sleep(0.2)\\n"
    )
    return f"""import os, subprocess, sys

code = "{code}"
subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", code])
    os._exit(0)"""


KILL_EVERYTHING = """import os, signal

for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) != os.getpid():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except Exception:
            pass
os.killpg(0, signal.SIGKILL)"""

SLOW_CELL = "import time\ntime.sleep(8)  # every cell stays well under the time limit"

CHILDREN = """import subprocess, sys, time

hog = "b = bytearray(700 * 2**20)\\nimport time\\ntime.sleep(60)"
children = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(4)]
time.sleep(60)"""

DISK = """with open("/tmp/filler", "wb") as fh:
    for _ in range(1200):
        fh.write(b"0" * 2**20)  # 1.2 GB into the sandbox's /tmp"""


# --------------------------------------------------------------------------- the batch


def _v3(nb) -> dict:
    return json.loads(nbformat.writes(nbformat.convert(copy.deepcopy(nb), 3)))


def _deep(depth: int) -> str:
    head = '{"nbformat": 4, "nbformat_minor": 5, "cells": [], "metadata": {"x": '
    return head + "[" * depth + "]" * depth + "}}"


CASES = {
    # name: (class, what it does, expected status, q1..q4)
    "forge_answers": (
        "forged score",
        "q1 bound to ex.q1.reference / _reference / ex.softmax; q2 exec(solution_source()) "
        "or the real ch00.py loaded from its file; q3 expected value read from the checker's "
        "frames and the heap; q4 an object equal to everything",
        "graded",
        (0, 0, 0, 0),
    ),
    "forge_comparisons": (
        "forged score",
        "numpy/math/torch comparisons and the engine's compare patched to always agree; "
        "wrong answers",
        "graded",
        (0, 0, 0, 0),
    ),
    "forge_json": (
        "forged score",
        "json.dump/dumps/JSONEncoder patched to write 100 points for every question (its own "
        "checks then fail to reach the judge, so the chapter's demo cell raises)",
        "error",
        (0, 0, 0, 0),
    ),
    "forge_rpc": (
        "forged score",
        "hand-made messages to the judge: verdicts, 'passed' outcomes, points fields",
        "graded",
        (0, 0, 0, 0),
    ),
    "forge_results_file": (
        "forged score",
        "writes a results file with 100 points everywhere it can, then kills its kernel",
        "error",
        (0, 0, 0, 0),
    ),
    "tamper": (
        "damage to others",
        "appends to _engine.py/ch00.py/grading code (installed and sandbox copies), plants "
        "__pycache__ bytecode, rewrites the masters' check cells, a .pth in the venv, an "
        "IPython start-up file, overwrites the victims and the grades CSV",
        "graded",
        (0, 0, 0, 0),
    ),
    "cross_kernel": (
        "damage to others",
        "for 8 s, while a victim is graded: looks for kernel connection files and judge "
        "sockets, SIGSTOP/SIGKILLs every process it sees, probes local ports",
        "graded",
        (0, 0, 0, 0),
    ),
    "corpus_tamper": (
        "damage to others",
        "tries to append to, overwrite, create, delete, rename, chmod, truncate and rmtree "
        "the corpus in $TFBOOK_DATA and at the grader's path; its cell raises if any attempt "
        "succeeded or the folder is not on a read-only mount (full solution)",
        "graded",
        (1, 1, 1, 1),
    ),
    "outliving": (
        "damage to others",
        "starts a daemon (new session, double fork) that keeps writing to grades.csv and a "
        "victim's submission for 25 s",
        "graded",
        (0, 0, 0, 0),
    ),
    "kill_everything": (
        "batch lost",
        "after q1, q2 are checked: SIGKILLs every process it sees, then its process group",
        "error",
        (1, 1, 0, 0),
    ),
    "meta_chapter_glob": ("batch lost", 'notebook metadata "chapter": "ch*"', "invalid", None),
    "meta_chapter_mismatch": (
        "batch lost",
        'metadata "chapter": "ch01" in a ch00 notebook',
        "invalid",
        None,
    ),
    "two_chapters": ("batch lost", "imports the exercises of ch00 and ch01", "invalid", None),
    "foreign_question": (
        "batch lost",
        "a check cell whose metadata names question ch01.q1 in a ch00 notebook",
        "invalid",
        None,
    ),
    "odd_cell_metadata": (
        "batch lost",
        "a cell whose metadata.tfbook is a string, a question id that is a list, another "
        "that is a number (full solution)",
        "graded",
        (1, 1, 1, 1),
    ),
    "deep_json": ("batch lost", "JSON nested 100,000 deep", "invalid", None),
    "json_list": ("batch lost", "a JSON list instead of a notebook", "invalid", None),
    "nbformat5": ("batch lost", "nbformat 5", "invalid", None),
    "malformed_rpc": (
        "batch lost",
        "malformed messages to the judge (empty, 2^60-byte length, bad JSON, deep JSON, bad "
        "tensors, pickle, handles, 1000 outcomes, calls on private names), then the official "
        "checks of a full solution",
        "graded",
        (1, 1, 1, 1),
    ),
    "slow_cells": (
        "limits",
        f"after q2: six cells of 8 s each under --timeout {TIMEOUT}",
        "timeout",
        (1, 1, 0, 0),
    ),
    "memory_children": (
        "limits",
        f"after q2: four children of 700 MB each under --memory-mb {MEMORY_MB}",
        "error",
        (1, 1, 0, 0),
    ),
    "disk_fill": (
        "limits",
        "after q2: writes 1.2 GB into /tmp (a tmpfs of 512 MB)",
        "error",
        (1, 1, 1, 1),
    ),
    "huge": ("limits", "a 17 MB notebook (limit 16 MB)", "invalid", None),
    "-dash": (
        "smaller",
        "file name starting with '-', given after '--' (full)",
        "graded",
        (1,) * 4,
    ),
    "=HYPERLINK(0)": (
        "smaller",
        "file name starting with '=' (stubs); its CSV cell must not be a formula",
        "graded",
        (0, 0, 0, 0),
    ),
    "v3": ("smaller", "a valid nbformat 3 notebook (full solution)", "graded", (1, 1, 1, 1)),
    "master": ("smaller", "the unchanged master notebook", "graded", (1, 1, 1, 1)),
    "symlink": ("smaller", "a symbolic link to a full solution", "invalid", None),
    "fifo": ("smaller", "a named pipe called .ipynb", "invalid", None),
    "directory": ("smaller", "a directory called .ipynb", "invalid", None),
    "victim_full": ("victim", "full solution, graded after the attacks", "graded", (1,) * 4),
    "victim_stubs": ("victim", "stubs, graded after the attacks", "graded", (0, 0, 0, 0)),
    "victim_concurrent": (
        "victim",
        "full solution graded at the same time as cross_kernel",
        "graded",
        (1, 1, 1, 1),
    ),
}


def _build(folder: Path, out: Path, masters: Path, corpus: Path) -> list[str]:
    """Write every submission into ``folder``; return the names in batch order."""
    nbs: dict[str, object] = {}
    victims = [folder / "victim_full.ipynb", folder / "victim_stubs.ipynb"]

    nb = student()
    for qid, source in FORGE_ANSWERS.items():
        set_solution(nb, qid, source)
    nbs["forge_answers"] = nb

    nb = student()
    insert_after_import(nb, PATCH_COMPARISONS)
    for qid, source in WRONG.items():
        set_solution(nb, qid, source)
    nbs["forge_comparisons"] = nb

    nb = student()
    insert_after_import(nb, PATCH_JSON)
    nbs["forge_json"] = nb

    nb = student()
    append(nb, FORGED_RPC)
    nbs["forge_rpc"] = nb

    nb = student()
    append(nb, RESULTS_FILE_THEN_KILL)
    nbs["forge_results_file"] = nb

    nb = student()
    insert_after_import(nb, tamper(out, victims, folder, masters))
    nbs["tamper"] = nb

    nb = solved()
    insert_after_import(nb, corpus_attack(corpus))
    nbs["corpus_tamper"] = nb

    nb = student()
    insert_after_import(nb, CROSS_KERNEL)
    nbs["cross_kernel"] = nb
    nbs["victim_concurrent"] = solved()

    nb = student()
    insert_after_import(nb, outliving(out, victims[0]))
    nbs["outliving"] = nb

    nb = solved()
    insert_after_check(nb, "ch00.q2", KILL_EVERYTHING)
    nbs["kill_everything"] = nb

    nb = solved()
    nb.metadata["tfbook"]["chapter"] = "ch*"
    nbs["meta_chapter_glob"] = nb

    nb = solved()
    nb.metadata["tfbook"]["chapter"] = "ch01"
    nbs["meta_chapter_mismatch"] = nb

    nb = solved()
    insert_after_import(nb, "from tfbook.exercises import ch01 as ex")
    nbs["two_chapters"] = nb

    nb = solved()
    checks = [c for c in nb.cells if c.metadata.get("tfbook", {}).get("role") == "check"]
    checks[0].metadata["tfbook"]["question"] = "ch01.q1"
    nbs["foreign_question"] = nb

    nb = solved()
    checks = [c for c in nb.cells if c.metadata.get("tfbook", {}).get("role") == "check"]
    checks[0].metadata["tfbook"]["question"] = ["ch00.q1"]
    checks[1].metadata["tfbook"]["question"] = 2
    nb.cells[0].metadata["tfbook"] = "a string"
    nbs["odd_cell_metadata"] = nb

    nb = solved()
    insert_after_import(nb, MALFORMED_RPC)
    nbs["malformed_rpc"] = nb

    nb = solved()
    insert_after_check(nb, "ch00.q2", *[SLOW_CELL] * 6)
    nbs["slow_cells"] = nb

    nb = solved()
    insert_after_check(nb, "ch00.q2", CHILDREN)
    nbs["memory_children"] = nb

    nb = solved()
    insert_after_check(nb, "ch00.q2", DISK)
    nbs["disk_fill"] = nb

    nbs["-dash"] = solved()
    nbs["=HYPERLINK(0)"] = student()
    nbs["victim_full"] = solved()
    nbs["victim_stubs"] = student()

    for name, nb in nbs.items():
        nbformat.write(nb, folder / f"{name}.ipynb")
    (folder / "v3.ipynb").write_text(json.dumps(_v3(solved())), encoding="utf-8")
    shutil.copyfile(MASTER, folder / "master.ipynb")
    (folder / "deep_json.ipynb").write_text(_deep(100_000), encoding="utf-8")
    (folder / "json_list.ipynb").write_text("[]", encoding="utf-8")
    five = json.loads(nbformat.writes(solved()))
    five["nbformat"] = 5
    (folder / "nbformat5.ipynb").write_text(json.dumps(five), encoding="utf-8")
    big = json.loads(nbformat.writes(solved()))
    big["metadata"]["padding"] = "x" * (17 << 20)
    (folder / "huge.ipynb").write_text(json.dumps(big), encoding="utf-8")
    (folder / "symlink.ipynb").symlink_to(folder / "victim_full.ipynb")
    os.mkfifo(folder / "fifo.ipynb")
    (folder / "directory.ipynb").mkdir()

    # The attacks go first; the victims after them (victim_concurrent next to cross_kernel).
    order = list(CASES)
    order.remove("victim_concurrent")
    order.insert(order.index("cross_kernel") + 1, "victim_concurrent")
    for name in ("slow_cells", "memory_children"):  # the long ones start early
        order.remove(name)
        order.insert(0, name)
    return [f"{name}.ipynb" for name in order]


def _installed(masters: Path, corpus: Path) -> dict[str, str]:
    """Hashes of the master notebooks the batch uses, the grader's corpus cache and the
    installed code."""
    hashes = tree_hashes(masters, MASTER, corpus, ROOT / "tfbook", ROOT / "tfbook_tools")
    for path in Path(SITE_PACKAGES).iterdir():
        if path.suffix in (".pth", ".py") and path.is_file():
            hashes[str(path)] = sha(path)
    jupyter = Path(sys.prefix) / "share" / "jupyter"
    if jupyter.is_dir():
        hashes.update(tree_hashes(jupyter))
    return hashes


def _daemons() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if DAEMON.encode() in cmdline:
            found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile-submissions")
    out = tmp_path_factory.mktemp("hostile-grades") / "grades.csv"
    # The batch's masters: a copy of book/, so that the check below is not confused by
    # someone editing other chapters in the working tree meanwhile.
    masters = tmp_path_factory.mktemp("masters")
    for path in (ROOT / "book").glob("[0-9][0-9]_*.ipynb"):
        shutil.copyfile(path, masters / path.name)
    # The grader's corpus cache (TFBOOK_DATA of the grading process below).
    cache = tmp_path_factory.mktemp("hostile-corpus")
    corpus = fake_corpus(cache)
    names = _build(folder, out, masters, corpus)
    # Every module the grader will import is compiled now, so bytecode written during the
    # batch can only come from an attack.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            str(ROOT / "tfbook"),
            str(ROOT / "tfbook_tools"),
        ],
        check=True,
    )
    files = [folder / n for n in names if (folder / n).is_file() and not (folder / n).is_symlink()]
    before = {p: sha(p) for p in files}
    installed = _installed(masters, cache)
    cwd = os.getcwd()
    os.chdir(folder)  # relative names, as an instructor types them
    started = time.monotonic()
    mp = pytest.MonkeyPatch()
    mp.setenv("TFBOOK_DATA", str(cache))
    try:
        code = cli_main(
            [
                "grade",
                "--out",
                str(out),
                "--jobs",
                "3",
                "--timeout",
                str(TIMEOUT),
                "--memory-mb",
                str(MEMORY_MB),
                "--masters",
                str(masters),
                "--",
                *names,
            ]
        )
    finally:
        mp.undo()
        os.chdir(cwd)
    seconds = time.monotonic() - started
    csv_after_batch = sha(out)
    daemons = _daemons()
    time.sleep(1.5)  # anything that survived would now write to the CSV or a submission
    return {
        "code": code,
        "rows": read_rows(out),
        "out": out,
        "folder": folder,
        "names": names,
        "before": before,
        "after": {p: sha(p) for p in files},
        "installed_before": installed,
        "installed_after": _installed(masters, cache),
        "corpus": corpus,
        "csv_after_batch": csv_after_batch,
        "csv_later": sha(out),
        "daemons": daemons,
        "seconds": seconds,
    }


# --------------------------------------------------------------------------- the checks


def _observed(row: dict) -> tuple:
    scores = tuple(int(float(row[q])) if row[q] else None for q in QIDS)
    return row["status"], (scores if row["status"] != "invalid" else None)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.slow
@needs_sandbox
def test_row(hostile, name):
    assert hostile["code"] == 0
    row = hostile["rows"][name]
    _, _, status, scores = CASES[name]
    assert _observed(row) == (status, scores), row
    if scores is not None:
        assert row["total"] == str(sum(scores)) and row["max_total"] == "4"
    else:
        assert row["total"] == "0" and row["chapter"] == ""


@pytest.mark.slow
@needs_sandbox
def test_submissions_masters_and_installed_code_are_byte_identical(hostile):
    assert hostile["before"] == hostile["after"]
    before, after = hostile["installed_before"], hostile["installed_after"]
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, changed
    corpus = str(hostile["corpus"])
    assert len([k for k in before if k.startswith(corpus + os.sep)]) == len(FAKE_WORKS) + 1
    assert not PTH.exists()
    assert not STARTUP.exists()
    assert not (hostile["out"].parent / ".tfbook-results.json").exists()


@pytest.mark.slow
@needs_sandbox
def test_nothing_outlives_its_sandbox(hostile):
    assert hostile["daemons"] == []
    assert _daemons() == []
    assert hostile["csv_after_batch"] == hostile["csv_later"]


@pytest.mark.slow
@needs_sandbox
def test_reasons_say_what_happened(hostile):
    folder = hostile["out"].parent

    def feedback(name: str) -> str:
        return (folder / f"{name}.feedback.md").read_text(encoding="utf-8")

    assert f"did not finish within {TIMEOUT} s" in feedback("slow_cells")
    assert f"more than {MEMORY_MB} MB of memory" in feedback("memory_children")
    assert "stopped before its end" in feedback("kill_everything")
    assert "larger than the limit of 16 MB" in feedback("huge")
    assert "symbolic link" in feedback("symlink")
    assert "not a regular file" in feedback("fifo")
    assert "nested deeper than" in feedback("deep_json")
    assert "no valid chapter" in feedback("meta_chapter_glob")
    assert "metadata says ch01" in feedback("meta_chapter_mismatch")
    assert "several chapters" in feedback("two_chapters")
    assert "question 'ch01.q1' of another chapter" in feedback("foreign_question")
    assert "raised OSError" in feedback("disk_fill")
    assert "not attempted" in feedback("forge_answers")


@pytest.mark.slow
@needs_sandbox
def test_csv_cells_never_start_a_formula(hostile):
    text = hostile["out"].read_text(encoding="utf-8")
    for line in text.splitlines()[1:]:
        for cell in line.split(","):
            assert not cell.startswith(("=", "+", "-", "@")), line
    assert "'=HYPERLINK(0).ipynb" in text and "'-dash.ipynb" in text


@pytest.mark.slow
@needs_sandbox
def test_table(hostile):
    """The issue note's table (printed with ``-s``)."""
    lines = ["| case | class | what it does | expected | observed |", "|---|---|---|---|---|"]
    for name, (klass, what, status, scores) in CASES.items():
        row = hostile["rows"][name]
        got_status, got_scores = _observed(row)
        expected = status + (f" {sum(scores)}/4" if scores is not None else "")
        observed = got_status + (f" {sum(got_scores)}/4" if got_scores is not None else "")
        lines.append(f"| `{name}` | {klass} | {what} | {expected} | {observed} |")
    lines.append(f"\n{len(CASES)} submissions graded in {hostile['seconds']:.0f} s")
    print("\n" + "\n".join(lines))
    assert len(lines) == len(CASES) + 3


# --------------------------------------------------------------------------- fast checks


def test_course_mode_hides_references(monkeypatch):
    from tfbook.exercises import ch00 as ex

    monkeypatch.setenv("TFBOOK_COURSE_MODE", "1")
    with pytest.raises(AttributeError, match="switched off"):
        ex.q1.reference  # noqa: B018
    assert not hasattr(ex.q1, "reference")
    with pytest.raises(RuntimeError, match="switched off"):
        ex.q1.solution_source()
    assert ex.q1.evaluate(ex.q1._reference).status == "passed"  # the engine still works
    monkeypatch.delenv("TFBOOK_COURSE_MODE")
    assert ex.q1.reference is ex.q1._reference
    assert "def softmax" in ex.q1.solution_source()


def test_grading_refuses_to_run_without_a_sandbox(monkeypatch, tmp_path, capsys):
    from tfbook_tools import grading

    monkeypatch.setattr(grading.sb, "sandbox_problem", lambda: "bubblewrap is not installed")
    sub = tmp_path / "a.ipynb"
    nbformat.write(student(), sub)
    assert cli_main(["grade", str(sub), "--out", str(tmp_path / "g.csv")]) == 2
    err = capsys.readouterr().err
    assert "refusing to run submissions without a sandbox" in err and "--no-sandbox" in err
    assert not (tmp_path / "g.csv").exists()


def test_dash_names_after_double_dash():
    from tfbook_tools.cli import main

    with pytest.raises(SystemExit):
        main(["grade", "--out", "g.csv", "-name.ipynb"])  # read as an option: refused


def test_wire_rejects_what_it_cannot_check():
    import base64

    import torch

    from tfbook_tools.wire import WireError, decode, encode

    value = {
        ("a", 1): [torch.arange(6.0).reshape(2, 3), (1.5, float("nan")), None, True],
        "b": {torch.bfloat16: torch.ones(2, dtype=torch.bfloat16), "s": {1, 2}},
    }
    back = decode(json.loads(json.dumps(encode(value))))
    assert torch.equal(back[("a", 1)][0], value[("a", 1)][0])
    assert back["b"][torch.bfloat16].dtype == torch.bfloat16 and back["b"]["s"] == {1, 2}
    bad = [
        {"t": "tensor", "dtype": "float32", "shape": [10**9], "b64": "AAAA"},
        {"t": "tensor", "dtype": "object", "shape": [1], "b64": "AAAA"},
        {
            "t": "tensor",
            "dtype": "float32",
            "shape": [2],
            "b64": base64.b64encode(b"1234").decode(),
        },
        {"t": "pickle", "v": ""},
        {"t": "remote", "id": 1},
        {"t": "dict", "v": [[{"t": "list", "v": []}, 1]]},
        ["a raw list"],
        {"t": "unknown"},
    ]
    nested: object = 1
    for _ in range(60):
        nested = {"t": "list", "v": [nested]}
    bad.append(nested)
    for data in bad:
        with pytest.raises(WireError):
            decode(data)
    with pytest.raises(WireError):
        encode(lambda x: x)  # code never crosses


def test_every_chapters_cases_cross_the_wire():
    """The judge hands each question's cases to the sandbox: they must encode, decode to the
    same inputs, and be the same every time they are made (the judge makes them twice)."""
    import torch

    from tfbook.exercises import chapters, load
    from tfbook.exercises._engine import compare
    from tfbook_tools.judge import _fingerprint
    from tfbook_tools.wire import decode, encode

    def export(obj):
        return {"t": "remote", "id": 0, "type": type(obj).__name__}

    for chapter in chapters():
        for q in load(chapter):
            first, second = q.make_cases(), q.make_cases()
            assert _fingerprint(first) == _fingerprint(second), q.qid
            for case in first:
                data = json.loads(json.dumps(encode(list(case.args), export)))
                back = decode(data, lambda node: node)
                for original, copy_ in zip(case.args, back, strict=True):
                    if isinstance(copy_, dict) and copy_.get("t") == "remote":
                        continue
                    assert compare(original, copy_, atol=0, rtol=0) is None, q.qid
                    if isinstance(original, torch.Tensor):
                        assert copy_.dtype == original.dtype, q.qid


def test_judge_proxies_allow_calls_and_public_data_only():
    from torch import nn

    from tfbook_tools.judge import CaseObjects, Limits

    class Module:  # stands for a tfbook helper class handed to the student
        __module__ = "tfbook.exercises.chXX"

        def __init__(self):
            self.name, self._secret = "parts", "reference"
            self.layer = nn.Linear(2, 2)

        def norm(self, x):
            return x

    policy = CaseObjects(Limits(10, 1024))
    obj = Module()
    assert policy.getattr(obj, "name") == ("value", "parts")
    assert policy.getattr(obj, "norm") == ("method", None)
    assert policy.call(obj, "norm", [3], {}) == 3
    assert policy.getattr(obj.layer, "weight")[0] == "value"
    for attempt in (
        lambda: policy.getattr(obj.layer, "train"),
        lambda: policy.call(obj.layer, "load_state_dict", [{}], {}),
        lambda: policy.call(obj.layer, "apply", [print], {}),
        lambda: policy.call(obj, "_secret", [], {}),
        lambda: policy.call(obj, None, [], {}),
    ):
        with pytest.raises(PermissionError):
            attempt()
    assert not policy.exportable(print) and not policy.exportable(os)


def test_the_judge_hands_out_no_object_of_the_check_engine_but_a_frozen_layer():
    # The engine is split over several modules; a case, an outcome or a question from any of
    # them would give a submission the references. Only a Frozen wrapper may cross.
    from torch import nn

    from tfbook.exercises import load
    from tfbook.exercises._run import Case, Frozen, Outcome
    from tfbook_tools.judge import CaseObjects, Limits

    policy = CaseObjects(Limits(10, 1024))
    question = load("ch01").questions[0]
    engine_objects = [question, Case("a case", args=(1,)), Outcome("returned", value=1)]
    for obj in engine_objects:
        assert not policy.exportable(obj), type(obj)
    assert policy.exportable(Frozen("a layer", nn.Linear(2, 2)))
