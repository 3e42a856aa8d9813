"""The ``tfbook`` command (chapter 0).

- ``tfbook student SRC... --out DIR [--force]``: write student editions of master notebooks.
- ``tfbook grade SUBMISSION... --out grades.csv [--jobs N] [--timeout S] [--memory-mb M]
  [--masters DIR] [--no-sandbox]``: grade a batch of submitted notebooks, each in its own
  sandbox, into a CSV plus one feedback file each.
- ``tfbook train gpt --out DIR [--config FILE] [--tokenizer char|bpe] [--steps N] [--seed S]
  [--<any GPTRunConfig field> VALUE] [--resume] [--overwrite] [--corpus DIR] [--device D]
  [--threads N] [--stop-after N] [--no-progress]``: the capstone's GPT run
  (:func:`tfbook.run.run_gpt`). It runs unchanged under
  ``torchrun --standalone --nproc_per_node=2 -m tfbook_tools.cli train gpt ...``. Exit status
  0, 130 after Ctrl-C, 143 after SIGTERM (a checkpoint is saved first), 1 on an error.
- ``tfbook train numbers --out DIR [--config FILE] [--<any NumbersConfig field> VALUE]
  [--no-progress]``: the capstone's Korean-number model (:func:`tfbook.numbers.run_numbers`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
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


# ------------------------------------------------------------------------- tfbook train


def _field_type(annotation: str):
    """The argparse type of a config field from its annotation (``None`` for unsupported)."""
    base = annotation.replace(" ", "").removesuffix("|None")
    optional = annotation.replace(" ", "").endswith("|None")
    convert = {"int": int, "float": float, "str": str}.get(base)
    if convert is None:
        return None
    if optional:
        return lambda text: None if text.lower() == "none" else convert(text)
    return convert


def _add_config_flags(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...]) -> None:
    """One ``--field-name VALUE`` flag per field of the config dataclass ``cls``."""
    group = parser.add_argument_group(f"{cls.__name__} fields (default: the config's)")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        if annotation == "bool":
            group.add_argument(flag, dest=f"cfg_{f.name}", action=argparse.BooleanOptionalAction)
            continue
        convert = _field_type(annotation)
        if convert is None:  # e.g. a tuple: set it in --config FILE
            continue
        default = f.default if f.default is not dataclasses.MISSING else "required"
        group.add_argument(
            flag,
            dest=f"cfg_{f.name}",
            type=convert,
            metavar=f.name.upper(),
            help=f"default {default!r}",
        )


def _config_from_args(cls: type, args: argparse.Namespace, base: dict | None):
    """``cls`` from ``base`` (a dict, e.g. a config.json) with the flags given on top."""
    values = dict(base or {})
    for key, value in vars(args).items():
        if key.startswith("cfg_") and value is not None:
            values[key[4:]] = value
    return cls.from_dict(values) if hasattr(cls, "from_dict") else cls(**values)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"--config {path}: cannot read a JSON config ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: must hold a JSON object of config fields")
    return data


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


def _train_gpt(args: argparse.Namespace) -> int:
    from tfbook.corpus import CorpusError
    from tfbook.run import CheckpointError, GPTRunConfig, run_gpt

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        base = None
        if args.config is not None:
            base = _read_json(args.config)
        elif args.resume and (args.out / "config.json").is_file():
            base = _read_json(args.out / "config.json")  # resume the run as it was configured
        cfg = _config_from_args(GPTRunConfig, args, base)
        result = run_gpt(
            cfg,
            args.out,
            corpus_dir=args.corpus,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            stop_after=args.stop_after,
            device=args.device,
        )
    except (CorpusError, CheckpointError, FileExistsError, ValueError, TypeError) as exc:
        print(f"tfbook train gpt: {exc}", file=sys.stderr)
        return 1
    if _is_rank0() and result.stopped is None:
        print(
            f"step {result.step}: validation loss {result.final_val_loss:.4f} nats per token, "
            f"{result.seconds:.1f} s; wrote {args.out}"
        )
    elif _is_rank0() and result.stopped == "stop_after":
        print(f"stopped after step {result.step} (--stop-after); checkpoint in {args.out}")
    return result.exit_code


def _train_numbers(args: argparse.Namespace) -> int:
    try:
        from tfbook.numbers import NumbersConfig, run_numbers
    except ImportError as exc:  # a checkout without chapter 8's numbers module
        print(f"tfbook train numbers: tfbook.numbers is not available ({exc})", file=sys.stderr)
        return 1
    try:
        base = _read_json(args.config) if args.config is not None else None
        cfg = _config_from_args(NumbersConfig, args, base)
        run_numbers(cfg, args.out, progress=not args.no_progress)
    except (ValueError, TypeError, FileExistsError) as exc:
        print(f"tfbook train numbers: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


def _add_train(sub, argv: list[str]) -> None:
    """``tfbook train gpt|numbers``; a model's flags are built only when it is asked for
    (building them imports torch)."""
    tr = sub.add_parser("train", help="train the capstone's models (chapter 8)")
    models = tr.add_subparsers(dest="model", required=True)
    wanted = argv[1] if len(argv) > 1 and argv[0] == "train" else None

    gpt = models.add_parser(
        "gpt",
        help="train the GPT language model on Shakespeare",
        description="Train a small GPT on Shakespeare (tfbook.run.run_gpt). Runs unchanged "
        "under torchrun: torchrun --standalone --nproc_per_node=2 -m tfbook_tools.cli train "
        "gpt --out DIR",
    )
    gpt.add_argument("--out", type=Path, required=True, metavar="DIR", help="the run folder")
    gpt.add_argument(
        "--config", type=Path, metavar="FILE", help="start from this config.json (flags win)"
    )
    gpt.add_argument("--resume", action="store_true", help="continue from DIR's checkpoint")
    gpt.add_argument("--overwrite", action="store_true", help="replace a run already in DIR")
    gpt.add_argument("--corpus", type=Path, metavar="DIR", help="default: the fetched corpus")
    gpt.add_argument("--device", default=None, help="cpu, cuda, mps ... (default: cuda if present)")
    gpt.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N)")
    gpt.add_argument("--stop-after", type=int, default=None, metavar="N", help="stop after N")
    gpt.add_argument("--no-progress", action="store_true", help="no progress bar")
    if wanted == "gpt":
        from tfbook.run import GPTRunConfig

        _add_config_flags(gpt, GPTRunConfig, skip=())
    gpt.set_defaults(func=_train_gpt)

    num = models.add_parser("numbers", help="train the Korean-number seq2seq model")
    num.add_argument("--out", type=Path, required=True, metavar="DIR", help="the run folder")
    num.add_argument("--config", type=Path, metavar="FILE", help="a JSON config (flags win)")
    num.add_argument("--no-progress", action="store_true", help="no progress bar")
    if wanted == "numbers":
        try:
            from tfbook.numbers import NumbersConfig
        except ImportError:  # reported by _train_numbers
            pass
        else:
            _add_config_flags(num, NumbersConfig, skip=())
    num.set_defaults(func=_train_numbers)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
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

    _add_train(sub, argv)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
