"""The ``tfbook`` command (chapter 0).

- ``tfbook student SRC... --out DIR [--force]``: write student editions of master notebooks.
- ``tfbook grade SUBMISSION... --out grades.csv [--jobs N] [--timeout S] [--memory-mb M]
  [--masters DIR] [--no-sandbox]``: grade a batch of submitted notebooks, each in its own
  sandbox, into a CSV plus one feedback file each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _student(args: argparse.Namespace) -> int:
    from tfbook_tools.student import StudentEditionError, write_student_editions

    missing = [str(p) for p in args.sources if not p.is_file()]
    if missing:
        print(f"tfbook student: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        reports = write_student_editions(args.sources, args.out, force=args.force)
    except StudentEditionError as exc:
        print(f"tfbook student: {exc}", file=sys.stderr)
        return 1
    refused = 0
    for r in reports:
        if r.action == "refused":
            refused += 1
            print(f"refused   {r.path} (exists with different content; use --force to overwrite)")
        else:
            print(f"{r.action:9} {r.path}")
    return 1 if refused else 0


def _grade(args: argparse.Namespace) -> int:
    from tfbook_tools.grading import SandboxUnavailable, grade_batch

    if not args.submissions:
        print("tfbook grade: no submissions given", file=sys.stderr)
        return 2
    inputs = {p.resolve() for p in args.submissions if p.exists()}
    if args.out.resolve() in inputs:
        print(
            "tfbook grade: --out would overwrite a submission; choose another path", file=sys.stderr
        )
        return 2
    feedback = {(args.out.parent / f"{p.stem}.feedback.md").resolve() for p in args.submissions}
    if feedback & inputs:
        print("tfbook grade: a feedback file would overwrite a submission", file=sys.stderr)
        return 2
    if args.no_sandbox:
        print(
            "tfbook grade: --no-sandbox: the notebooks run WITHOUT isolation; a submission can "
            "read and change anything this user can (other submissions, the grades, the "
            "installed code). Use it only for code you trust.",
            file=sys.stderr,
        )
    try:
        results = grade_batch(
            list(args.submissions),
            args.out,
            args.masters,
            jobs=args.jobs,
            timeout=args.timeout,
            memory_mb=args.memory_mb,
            sandbox=not args.no_sandbox,
            max_notebook_mb=args.max_notebook_mb,
            progress=lambda r: print(
                f"{r.status:8} {r.total:g}/{r.max_total:g}  {r.file}"
                + (f"  ({r.reason})" if r.reason else ""),
                flush=True,
            ),
        )
    except SandboxUnavailable as exc:
        print(
            f"tfbook grade: refusing to run submissions without a sandbox: {exc}. Students' "
            "code could otherwise read other submissions and the grades, rewrite the installed "
            "code and forge scores. Install bubblewrap, or pass --no-sandbox to grade trusted "
            "notebooks without isolation.",
            file=sys.stderr,
        )
        return 2
    print(f"wrote {args.out} and {len(results)} feedback file(s) in {args.out.parent}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tfbook", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    st = sub.add_parser("student", help="write student editions of master notebooks")
    st.add_argument("sources", nargs="+", type=Path, metavar="SRC")
    st.add_argument("--out", type=Path, required=True, metavar="DIR")
    st.add_argument("--force", action="store_true", help="overwrite files that differ")
    st.set_defaults(func=_student)

    gr = sub.add_parser(
        "grade",
        help="grade submitted notebooks into a CSV",
        description="Grade submitted notebooks, each in its own sandbox. File names that "
        "start with '-' go after '--': tfbook grade --out g.csv -- -name.ipynb",
    )
    gr.add_argument("submissions", nargs="+", type=Path, metavar="SUBMISSION")
    gr.add_argument("--out", type=Path, required=True, metavar="CSV")
    gr.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel")
    gr.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds for each submission as a whole, kernel start included (default 300)",
    )
    gr.add_argument(
        "--memory-mb",
        type=int,
        default=6144,
        help="memory for each submission as a whole, all its processes together (default 6144)",
    )
    gr.add_argument(
        "--max-notebook-mb", type=int, default=16, help="largest submission file read (default 16)"
    )
    gr.add_argument("--masters", type=Path, default=None, help="folder of master notebooks")
    gr.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run the notebooks without isolation (only for trusted code)",
    )
    gr.set_defaults(func=_grade)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
