"""Other machines, simulated on this one: ``python -m tfbook_tools.variants``.

A stored output must mean the same on the reader's machine: another CPU generation (other
SIMD kernels), another BLAS kernel, another thread count (another order of a reduction's
additions). One machine can run each of those code paths by environment variables that the
libraries read when they load:

- ``ATEN_CPU_CAPABILITY``: PyTorch's kernels (``default`` = no AVX, ``avx2``, ``avx512``);
- ``MKL_ENABLE_INSTRUCTIONS`` and ``ONEDNN_MAX_CPU_ISA``: the instruction set of PyTorch's
  matrix products (MKL) and of its oneDNN kernels;
- ``NPY_DISABLE_CPU_FEATURES``: NumPy's SIMD loops beyond its baseline;
- ``OPENBLAS_CORETYPE``: the kernel of NumPy's OpenBLAS (left alone where the machine already
  sets it: some processors need their setting);
- ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``: threads per process. PyTorch caps these at the
  number of cores, so ``run`` also gives every IPython kernel it starts a start-up file that
  calls ``torch.set_num_threads(N)`` (4 threads on a 2-core machine are 4 partial sums).

Commands:

- ``list``: the variants this machine can run (``--matrix`` for ``make portability``'s).
- ``env NAME``: the variables of one variant, as ``VAR=value`` lines.
- ``run NAME -- COMMAND...``: run a command under a variant (after printing what it set).

Names: ``foreign`` is the one ``make test`` runs (an x86 CPU without AVX2 or a machine without
x86 SIMD at all, one thread); the matrix names are ``<capability>-<threads>t``, e.g.
``default-1t``, ``avx2-4t``, ``avx512-2t`` (avx512 only on a CPU that has it).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["capabilities", "variant_env", "matrix", "main"]

THREADS = (1, 2, 4)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _x86() -> bool:
    return platform.machine().lower() in {"x86_64", "amd64", "i686", "i386"}


def capabilities() -> list[str]:
    """PyTorch CPU capabilities this machine can run: ``default`` always; AVX2 / AVX-512 on x86."""
    caps = ["default"]
    if _x86():
        flags = _cpu_flags()
        if {"avx2", "fma"} <= flags:
            caps.append("avx2")
        if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
            caps.append("avx512")
    return caps


def _threads(n: int) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}


def variant_env(name: str) -> dict[str, str]:
    """The environment variables of variant ``name`` (see the module docstring)."""
    if name == "native":
        return {}
    if name == "foreign":
        env = {
            "ATEN_CPU_CAPABILITY": "default",
            "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR" if _x86() else "",
            **_threads(1),
        }
        if _x86():
            env |= {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"}
            if "OPENBLAS_CORETYPE" not in os.environ:
                env["OPENBLAS_CORETYPE"] = "Sandybridge"  # AVX without AVX2
        return {k: v for k, v in env.items() if v}
    cap, sep, threads = name.rpartition("-")
    if not sep or cap not in capabilities() or threads not in {f"{n}t" for n in THREADS}:
        raise ValueError(
            f"variant must be native, foreign or one of {', '.join(matrix())} on this machine, "
            f"got {name!r}"
        )
    return {"ATEN_CPU_CAPABILITY": cap, **_threads(int(threads[:-1]))}


def matrix() -> list[str]:
    """``make portability``'s variants: every capability here times 1, 2 and 4 threads."""
    return [f"{cap}-{n}t" for cap in capabilities() for n in THREADS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfbook_tools.variants")
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list")
    ls.add_argument("--matrix", action="store_true", help="only make portability's variants")
    sub.add_parser("env").add_argument("name")
    run = sub.add_parser("run")
    run.add_argument("name")
    run.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "list":
        print(" ".join(matrix() if args.matrix else ["native", "foreign", *matrix()]))
        return 0
    try:
        env = variant_env(args.name)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "env":
        print("\n".join(f"{k}={v}" for k, v in env.items()))
        return 0
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("run NAME -- COMMAND...: no command given")
    shown = " ".join(f"{k}={v}" for k, v in env.items()) or "(no variables)"
    print(f"variant {args.name}: {shown}", flush=True)
    with tempfile.TemporaryDirectory(prefix="tfbook-variant-") as ipython_dir:
        if "OMP_NUM_THREADS" in env:
            env["IPYTHONDIR"] = _threads_profile(Path(ipython_dir), int(env["OMP_NUM_THREADS"]))
        return subprocess.call(cmd, env={**os.environ, **env})


def _threads_profile(folder: Path, threads: int) -> str:
    """An IPython directory whose start-up file sets PyTorch's thread count (see module doc)."""
    startup = folder / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-tfbook-threads.py").write_text(
        f"import torch as _torch\n_torch.set_num_threads({threads})\ndel _torch\n",
        encoding="utf-8",
    )
    return str(folder)


if __name__ == "__main__":
    sys.exit(main())
