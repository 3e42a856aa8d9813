"""The grader's side of the judges (chapter 0): starting them, and hearing their verdicts.

A judge (:mod:`tfbook_tools.judge`) holds the references and compares a submission's answers
outside the sandbox. Judges are forked from one server process that has ``torch`` and the
exercises loaded (:class:`JudgeServer`), one per submission; the grader keeps one end of a
socket pair to each (:class:`JudgeLink`), on which the judge reports each check's verdict
as soon as it is made, so a later crash or kill cannot erase it.

Public API: :data:`JUDGES`, :class:`JudgeServer`, :class:`JudgeLink`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tfbook_tools import wire

__all__ = ["JUDGES", "JudgeLink", "JudgeServer"]

#: The judge's address-space limit.
JUDGE_MEMORY_MB = 4096


@dataclass
class JudgeLink:
    """The grader's end of one judge: what it has said so far, and whether it has finished."""

    conn: socket.socket
    pid: int
    records: dict[str, dict] = field(default_factory=dict)  # qid -> the last check's verdict
    notes: list[str] = field(default_factory=list)
    ready: bool = False
    done: bool = False

    def receive(self) -> bool:
        """Read one message from the judge; False once it has nothing more to say."""
        if self.done:
            return False
        try:
            message = wire.recv(self.conn, 1 << 20)
        except (OSError, ValueError, ConnectionError):
            self.done = True
            return False
        op = message.get("op")
        if op == "ready":
            self.ready = True
        elif op == "done":
            self.done = True
        elif op == "check" and isinstance(message.get("qid"), str):
            self.records[message["qid"]] = message
        elif op == "note" and isinstance(message.get("text"), str) and len(self.notes) < 20:
            self.notes.append(message["text"][:300])
        return not self.done

    def wait_ready(self) -> None:
        """Wait (up to 120 s) for the judge to start; RuntimeError with its notes if it fails."""
        self.conn.settimeout(120)
        self.receive()
        if not self.ready:
            raise RuntimeError("the judge did not start: " + "; ".join(self.notes))
        self.conn.settimeout(30)

    def finish(self) -> None:
        """Tell the judge the notebook has ended and read what it still has to say (15 s)."""
        try:
            wire.send(self.conn, {"op": "stop"})
        except OSError:
            pass
        self.conn.settimeout(15)
        while not self.done:
            self.receive()

    def close(self) -> None:
        """Close the link; a judge that has not finished is killed."""
        self.conn.close()
        if not self.done:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass

    def problems(self) -> list[str]:
        """The judge's notes that say it stopped or failed, for the submission's reasons."""
        return [f"judge: {note}" for note in self.notes if "stopped" in note or "failed" in note]


class JudgeServer:
    """Starts judge processes from a fork server that has torch and the exercises loaded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None

    def _ensure(self) -> socket.socket:
        if self.proc is not None and self.proc.poll() is None and self.sock is not None:
            return self.sock
        if self.sock is not None:
            self.sock.close()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        import tfbook
        import tfbook_tools

        roots = {
            str(Path(tfbook.__file__).resolve().parents[1]),
            str(Path(tfbook_tools.__file__).resolve().parents[1]),
        }
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([*sorted(roots), env.get("PYTHONPATH", "")])
        env.pop("TFBOOK_STRICT", None)
        env["OMP_NUM_THREADS"] = "1"  # the server forks: no thread pools before that
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfbook_tools.judge", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        theirs.close()
        self.sock = mine
        return mine

    def start(
        self, chapter: str, socket_path: str, cpu: float, memory: int = JUDGE_MEMORY_MB
    ) -> JudgeLink:
        """A new judge of ``chapter`` listening on ``socket_path`` (the sandbox's way out),
        with ``cpu`` seconds and ``memory`` MB."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        request = {"chapter": chapter, "socket": socket_path, "cpu": cpu, "memory": memory}
        try:
            with self.lock:
                for attempt in (1, 2):
                    server = self._ensure()
                    try:
                        data = [json.dumps(request).encode("utf-8")]
                        socket.send_fds(server, data, [theirs.fileno()])
                        server.settimeout(120)
                        reply = json.loads(server.recv(4096).decode("utf-8"))
                        break
                    except (OSError, ValueError):
                        if attempt == 2:
                            raise
                        self.proc = None  # the server died: start a new one
        finally:
            theirs.close()
        return JudgeLink(mine, int(reply["pid"]))


#: The grader's judge server, shared by every batch of this process.
JUDGES = JudgeServer()
