"""The ``tfbook`` command (chapter 0).

- ``tfbook student SRC... --out DIR [--force]``: write student editions of master notebooks.
- ``tfbook grade SUBMISSION... --out grades.csv [--jobs N] [--timeout S] [--memory-mb M]
  [--masters DIR]``: grade a batch of submitted notebooks into a CSV plus one feedback file each.
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
    from tfbook_tools.grading import grade_batch

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
    results = grade_batch(
        list(args.submissions),
        args.out,
        args.masters,
        jobs=args.jobs,
        timeout=args.timeout,
        memory_mb=args.memory_mb,
    )
    for r in results:
        print(
            f"{r.status:8} {r.total:g}/{r.max_total:g}  {r.file}"
            + (f"  ({r.reason})" if r.reason else "")
        )
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

    gr = sub.add_parser("grade", help="grade submitted notebooks into a CSV")
    gr.add_argument("submissions", nargs="+", type=Path, metavar="SUBMISSION")
    gr.add_argument("--out", type=Path, required=True, metavar="CSV")
    gr.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel")
    gr.add_argument("--timeout", type=float, default=60.0, help="seconds per cell")
    gr.add_argument("--memory-mb", type=int, default=6144, help="address-space limit per kernel")
    gr.add_argument("--masters", type=Path, default=None, help="folder of master notebooks")
    gr.set_defaults(func=_grade)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
