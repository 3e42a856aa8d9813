"""Running one submission in a sandbox (chapter 0): Debian's bubblewrap on Linux.

:func:`command` builds the ``bwrap`` command line: a fresh root in which only the system
(``/usr``, ``/etc``, ...), the Python installation and the grader's prepared files are
visible, all read-only (with the grader's copy of the capstone corpus, if it has one, at
:data:`DATA`); a private ``/tmp`` (size-limited tmpfs, the only writable place, and
the submission's home); no network (own network namespace), no view of other processes (own
PID namespace: when the sandbox ends every process in it is killed by the kernel), no System
V IPC, a new terminal session. Run as root, the grader drops to an unprivileged uid of its own
per job slot inside the sandbox; run as a normal user, bubblewrap uses a user namespace.

:func:`supervise` enforces one wall-clock limit and one memory limit for the submission as
a whole: every process gets an address-space limit, and the resident memory of all the
sandbox's processes together plus what they stored in its ``/tmp`` is sampled 20 times a
second; the whole sandbox is killed when the sum exceeds the limit.
"""

from __future__ import annotations

import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

__all__ = [
    "SITE",
    "NOTEBOOK",
    "SOCKET",
    "DATA",
    "Run",
    "sandbox_problem",
    "command",
    "environment",
    "supervise",
]

SITE = "/opt/tfbook/site"
INDIR = "/opt/tfbook/in"
NOTEBOOK = f"{INDIR}/cells.json"
RUNDIR = "/run/tfbook"
SOCKET = f"{RUNDIR}/judge.sock"
#: ``$TFBOOK_DATA`` inside the sandbox: the grader's copy of the corpus cache, read-only.
DATA = "/opt/tfbook/data"
HOME = "/tmp/home"
WORKDIR = "/tmp/work"
#: Processes (threads included) one submission may have at the same time.
MAX_TASKS = 512
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
_MODULES = ("torch", "numpy", "IPython", "matplotlib", "nbformat", "ipywidgets")


@dataclass
class Run:
    """How a supervised submission ended."""

    ended: str  # "exited", "timeout", "memory", "aborted"
    returncode: int | None = None
    seconds: float = 0.0
    peak_mb: float = 0.0
    events: list[dict] = field(default_factory=list)
    stderr: str = ""


def _bwrap() -> str | None:
    return shutil.which("bwrap")


@lru_cache(maxsize=1)
def _bwrap_help() -> str:
    bwrap = _bwrap()
    if not bwrap:
        return ""
    proc = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=30)
    return proc.stdout + proc.stderr


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def python_roots() -> list[str]:
    """Folders the sandbox needs to run this Python and the notebook stack (read-only)."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    candidates.add(str(Path(os.path.realpath(sys.executable)).parent.parent))
    import importlib.util

    for name in _MODULES:
        spec = importlib.util.find_spec(name)
        if spec and spec.origin:
            candidates.add(str(Path(spec.origin).resolve().parent.parent))
    roots: list[str] = []
    for path in sorted({os.path.realpath(p) for p in candidates if p}, key=len):
        if path == "/" or not os.path.isdir(path):
            continue
        if any(_under(path, s) for s in _SYSTEM) or any(_under(path, r) for r in roots):
            continue
        roots.append(path)
    return roots


def command(
    *,
    site: Path,
    indir: Path,
    rundir: Path,
    tmp_mb: int,
    uid: int,
    masks: list[Path],
    empty: Path,
    info_fd: int,
    data: Path | None = None,
) -> list[str]:
    """The ``bwrap`` command that runs the grader's notebook runner in a fresh sandbox.

    ``data``, when given, is a corpus cache (a folder holding ``shakespeare/``) bound
    read-only at :data:`DATA`, a fixed path: which folder it is on the grader's side is
    never visible, nor anything next to it.
    """
    bwrap = _bwrap()
    assert bwrap, "bubblewrap is not installed"
    root = os.geteuid() == 0
    args = [bwrap, "--die-with-parent", "--new-session"]
    args += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
    args += ["--unshare-cgroup-try"]
    if root:
        # Needed only by setpriv below, which drops to an unprivileged uid before Python runs.
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user"]
        if "--disable-userns" in _bwrap_help():
            args += ["--disable-userns"]
    bound: list[str] = []
    made: set[str] = set()

    def parents(path: str) -> list[str]:
        out = []
        for parent in reversed(Path(path).parents):
            p = str(parent)
            if p != "/" and p not in made and not any(_under(p, b) for b in bound):
                made.add(p)
                out += ["--perms", "0755", "--dir", p]
        return out

    for path in _SYSTEM:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
            bound.append(path)
    args += ["--dev", "/dev", "--proc", "/proc"]
    # The private /tmp first: a Python or checkout that lives under /tmp (a CI clone) is then
    # bound on top of it instead of being hidden by it.
    args += ["--perms", "1777", "--size", str(int(tmp_mb) << 20), "--tmpfs", "/tmp"]
    made.add("/tmp")
    for path in python_roots():
        args += parents(path) + ["--ro-bind", path, path]
        bound.append(path)
    args += parents(SITE) + ["--ro-bind", str(site), SITE, "--ro-bind", str(indir), INDIR]
    if data is not None:
        args += parents(DATA) + ["--ro-bind", str(data), DATA]
    args += parents(RUNDIR) + ["--ro-bind", str(rundir), RUNDIR]
    for mask in masks:
        real = os.path.realpath(mask)
        if any(_under(real, b) for b in bound) and os.path.isdir(real):
            args += ["--ro-bind", str(empty), real]
    args += ["--chdir", "/tmp", "--info-fd", str(info_fd), "--"]
    if root:
        args += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        args += ["--inh-caps=-all", "--bounding-set=-all"]
    args += [sys.executable, "-m", "tfbook_tools.sandbox_runner"]
    return args


def environment(
    *, site: str, notebook: str, socket: str, home: str, workdir: str, data: str | None = None
) -> dict:
    """The environment of the runner and the kernel (nothing inherited from the grader).

    ``data`` becomes ``$TFBOOK_DATA`` (where :func:`tfbook.corpus.default_cache` looks);
    without it the corpus cache would be the submission's empty home.
    """
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": home,
        "TMPDIR": str(Path(home).parent),
        "TFBOOK_WORKDIR": workdir,
        "PYTHONPATH": site,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "JUPYTER_CONFIG_DIR": f"{home}/.jupyter",
        "JUPYTER_DATA_DIR": f"{home}/.local/share/jupyter",
        "JUPYTER_RUNTIME_DIR": f"{home}/.local/share/jupyter/runtime",
        "JUPYTER_PLATFORM_DIRS": "1",
        "IPYTHONDIR": f"{home}/.ipython",
        "MPLCONFIGDIR": f"{home}/.config/matplotlib",
        "XDG_CACHE_HOME": f"{home}/.cache",
        "XDG_CONFIG_HOME": f"{home}/.config",
        "XDG_DATA_HOME": f"{home}/.local/share",
        "XDG_RUNTIME_DIR": f"{home}/.run",
        "MPLBACKEND": "Agg",
        "TFBOOK_COURSE_MODE": "1",
        "TFBOOK_GRADER_SOCKET": socket,
        "TFBOOK_NOTEBOOK": notebook,
        "TFBOOK_MAX_TASKS": str(MAX_TASKS),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    if data is not None:
        env["TFBOOK_DATA"] = data
    return env


@lru_cache(maxsize=1)
def sandbox_problem() -> str | None:
    """``None`` when the bubblewrap sandbox works on this machine, else why it does not."""
    if not sys.platform.startswith("linux"):
        return "the sandbox needs Linux (bubblewrap); this is " + sys.platform
    bwrap = _bwrap()
    if not bwrap:
        return "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        return "setpriv (util-linux) is missing; it drops root inside the sandbox"
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tfbook-probe-") as tmp:
        base = Path(tmp)
        for name in ("site", "in", "run", "empty"):
            (base / name).mkdir()
            os.chmod(base / name, 0o755)
        args = command(
            site=base / "site",
            indir=base / "in",
            rundir=base / "run",
            tmp_mb=16,
            uid=65534,
            masks=[],
            empty=base / "empty",
            info_fd=2,
        )
        args = args[: args.index("-m")] + ["-c", "import sys; sys.exit(0)"]
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bubblewrap could not start: {exc}"
    if proc.returncode != 0:
        tail = " ".join(line for line in proc.stderr.splitlines() if "child-pid" not in line)
        return f"bubblewrap does not work here: {tail.strip()[-300:] or proc.returncode}"
    return None


def limit_preexec(memory_mb: int, file_mb: int) -> Callable[[], None]:
    """Resource limits for the child (set between fork and exec, inherited by all)."""

    def apply() -> None:
        if memory_mb > 0:
            resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if file_mb > 0:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb << 20, file_mb << 20))

    return apply


def _status_kb(path: str, fields: tuple[str, ...] = ("RssAnon:", "RssShmem:")) -> tuple[int, bool]:
    """Sum of ``fields`` (kB) in a ``/proc/<pid>/status``-like file; False if unreadable."""
    try:
        with open(path, "rb") as fh:
            text = fh.read(1 << 16).decode("ascii", "replace")
    except OSError:
        return 0, False
    total = 0
    for line in text.splitlines():
        if line.startswith(fields):
            parts = line.split()
            total += int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return total, True


class _Sampler:
    """Memory of everything in the sandbox: its processes' resident memory plus its /tmp."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.inner: int | None = None  # the sandbox's init process (host pid), from bwrap
        self.tmp: str | None = None

    def _inside(self) -> list[str] | None:
        if self.inner is None:
            return None
        root = f"/proc/{self.inner}/root/proc"
        try:
            return [f"{root}/{p}/status" for p in os.listdir(root) if p.isdigit()]
        except OSError:
            return None

    def _descendants(self) -> list[str]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    stat = fh.read().decode("ascii", "replace")
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
        out, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            out.append(f"/proc/{pid}/status")
            todo += children.get(pid, [])
        return out

    def sample(self, limit_mb: float = 0.0) -> float:
        """Memory in MB. Resident anonymous memory is summed first (cheap); when that is over
        ``limit_mb``, pages shared by forked processes are counted once (proportional set
        size from ``smaps_rollup``), so a fork of a big process is not counted twice."""
        paths = self._inside()
        if paths is None:
            paths = self._descendants()
        stored = 0
        if self.tmp:
            try:
                st = os.statvfs(self.tmp)
                stored = (st.f_blocks - st.f_bfree) * st.f_frsize // 1024
            except OSError:
                pass
        kb = sum(_status_kb(path)[0] for path in paths)
        if limit_mb and (kb + stored) / 1024.0 > limit_mb:
            fields = ("Pss_Anon:", "Pss_Shmem:")
            pss = [_status_kb(p.replace("/status", "/smaps_rollup"), fields) for p in paths]
            if all(ok for _, ok in pss):
                kb = sum(value for value, _ in pss)
        return (kb + stored) / 1024.0


def supervise(
    proc: subprocess.Popen,
    *,
    timeout: float,
    memory_mb: int,
    info_fd: int | None,
    watch: dict[int, Callable[[], bool]] | None = None,
    abort: Callable[[], bool] = lambda: False,
    sandboxed: bool = True,
    max_events: int = 20000,
) -> Run:
    """Wait for ``proc`` (started in its own session) under one wall-clock and memory limit.

    ``proc.stdout`` carries the runner's JSON events; ``watch`` maps other readable file
    descriptors to callbacks (the judge's socket) that return False when done. When a limit
    is hit the whole process group, and with it the sandbox's PID namespace, is killed.
    """
    start = time.monotonic()
    run = Run("exited")
    sampler = _Sampler(proc.pid)
    buffer = b""
    received = 0
    stderr_tail = b""
    watch = dict(watch or {})
    fds: dict[int, str] = {proc.stdout.fileno(): "out", proc.stderr.fileno(): "err"}
    if info_fd is not None:
        fds[info_fd] = "info"
    info = b""
    next_sample = 0.0

    def kill() -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    while True:
        now = time.monotonic()
        if now - start > timeout:
            run.ended = "timeout"
            kill()
            break
        if abort():
            run.ended = "aborted"
            kill()
            break
        if now >= next_sample:
            # Inside a sandbox its own /proc lists its processes; otherwise all of /proc is
            # scanned, which costs more: less often.
            next_sample = now + (0.05 if sampler.inner is not None else 0.25)
            used = sampler.sample(memory_mb)
            run.peak_mb = max(run.peak_mb, used)
            if memory_mb > 0 and used > memory_mb:
                run.ended = "memory"
                kill()
                break
        readable, _, _ = select.select(list(fds) + list(watch), [], [], 0.05)
        for fd in readable:
            if fd in watch:
                if not watch[fd]():
                    watch.pop(fd)
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                fds.pop(fd, None)
                continue
            kind = fds[fd]
            if kind == "out":
                received += len(chunk)
                if received < 4 << 20:
                    buffer += chunk
            elif kind == "err":
                stderr_tail = (stderr_tail + chunk)[-8192:]
            else:
                info += chunk
                try:
                    sampler.inner = int(json.loads(info.decode())["child-pid"])
                    sampler.tmp = f"/proc/{sampler.inner}/root/tmp" if sandboxed else None
                    fds.pop(fd, None)
                except (ValueError, KeyError, TypeError):
                    pass
        if proc.poll() is not None and "out" not in fds.values():
            break
    kill()
    try:
        run.returncode = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        run.returncode = None
    run.seconds = time.monotonic() - start
    for line in buffer.decode("utf-8", "replace").splitlines()[:max_events]:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("e"), str):
            run.events.append(event)
    run.stderr = stderr_tail.decode("utf-8", "replace")
    return run
