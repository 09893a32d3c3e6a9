"""The ``crossdistill`` command (also ``python -m crossdistill``): ``run CONFIG [key=value ...]
[--out DIR]``, ``report RUN_DIR ...``, ``list`` and ``--version``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import shlex
import sys
import traceback
from pathlib import Path

from . import __version__
from .errors import CrossdistillError

# Nothing above imports torch or scikit-learn: `run` and `report` import the library when they
# start, so that --help, --version and `list` answer at once.

# The status of a command that stopped because its reader closed stdout: 128 + SIGPIPE, what a
# shell reports for a program killed by SIGPIPE (``signal.SIGPIPE`` does not exist on Windows).
CLOSED_PIPE_STATUS = 141


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``crossdistill`` command; returns the process exit status.

    A reader that closes the pipe early (``crossdistill list | head -1``) ends the command
    quietly, with status `CLOSED_PIPE_STATUS`, instead of a ``BrokenPipeError`` traceback.
    """
    try:
        try:
            return _main(argv)
        finally:  # also on argparse's exit after --help or --version
            sys.stdout.flush()  # a closed pipe raises here, not as a warning at interpreter exit
    except BrokenPipeError:
        # Python ignores SIGPIPE and raises instead; point stdout at devnull so that the final
        # flush at exit cannot raise again (the recipe of the ``signal`` module's documentation).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return CLOSED_PIPE_STATUS


def _main(argv: list[str] | None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit status."""
    parser = argparse.ArgumentParser(
        prog="crossdistill", description="Knowledge transfer between models and data domains."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run an experiment config")
    run.add_argument("config", help="a YAML file or the name of a built-in experiment")
    run.add_argument("overrides", nargs="*", help="key=value settings, e.g. seeds=[0,1]")
    run.add_argument("--out", type=Path, help="run directory (default: runs/<name>)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument(
        "--device", help="auto, cpu, cuda or cuda:N: the same as the override device=DEVICE"
    )
    run.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="train on N processes (CPU: gloo; device cuda: one GPU each) started by Lightning "
        "Fabric; under torchrun, its processes are used without this option",
    )
    run.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="a Python module or .py file to import first (it may register methods, models, "
        "mappings or datasets); repeatable",
    )
    commands.add_parser("list", help="list the built-in experiments")
    report = commands.add_parser(
        "report", help="one HTML page (and its Markdown twin) over finished run directories"
    )
    report.add_argument("runs", nargs="+", type=Path, help="finished run directories")
    report.add_argument(
        "--out",
        type=Path,
        default=Path("report"),
        help="writes OUT.html and OUT.md (default: report)",
    )
    report.add_argument(
        "--claims", type=Path, help="a YAML list of the claims (expected results) to summarise"
    )
    args, extra = parser.parse_known_args(argv)  # overrides may also follow the options
    unknown = [item for item in extra if item.startswith("-") or "=" not in item]
    if unknown or (extra and args.command != "run"):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides += extra
    if args.command == "run" and args.device is not None:
        args.overrides.append(f"device={args.device}")

    if args.command == "list":
        from .builtin import builtin_configs, summary

        for name, path in sorted(builtin_configs().items()):
            print(f"{name:26s} {summary(path)}")
        return 0
    if args.command == "report":
        from .experiments.report import write_report

        try:
            page, twin = write_report(args.runs, args.out, args.claims)
        except CrossdistillError as error:
            print(f"crossdistill: error: {error}", file=sys.stderr)
            return 2
        print(f"wrote {page} and {twin}")
        return 0
    return _run(args, sys.argv[1:] if argv is None else argv)


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    """The command ``crossdistill run`` (``argv``, its words, go to the run's ``command.txt``)."""
    import torch

    from . import training
    from .experiments import load_config, run_experiment
    from .files import main_process, write_if_changed
    from .training import distributed

    out = fabric = None
    try:
        for module in args.imports:
            _import(module)
        config = load_config(args.config, args.overrides)
        out = args.out or Path("runs") / config.name
        fabric = distributed.start(args.processes, torch.device(config.device).type)
        if not main_process():
            run_experiment(config, out, progress=False)
            return 0
        print(f"running {config.name} into {out}", file=sys.stderr)
        if fabric is not None:
            print(
                f"on {fabric.world_size} processes ({fabric.strategy.process_group_backend}): "
                "each batch is split across them",
                file=sys.stderr,
            )
        logging.basicConfig(format="crossdistill: %(message)s")
        logging.getLogger(training.__name__).setLevel(logging.INFO)
        run_experiment(config, out, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"crossdistill: interrupted; {_kept(out)}", file=sys.stderr)
        return 130
    except (CrossdistillError, ImportError, ValueError) as error:
        print(f"crossdistill: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # an unwritable or full --out, a file the user named
        print(f"crossdistill: error: {error.strerror or error}: {error.filename}", file=sys.stderr)
        return 2
    except Exception:
        lost = distributed.stopped() if fabric is not None else []
        if not lost:
            raise
        print(
            f"crossdistill: error: {', '.join(lost)} of this run's {fabric.world_size} "
            f"processes stopped, so rank {fabric.global_rank} cannot go on; {_kept(out)}",
            file=sys.stderr,
        )
        return 1
    write_if_changed(out / "command.txt", _command(argv) + "\n")
    print((out / "table.md").read_text())
    files = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
    print(f"outputs in {out}/ ({', '.join(files)})")
    return 0


def _kept(out: Path | None) -> str:
    """What an interrupted run leaves in ``out``, and how to go on."""
    if out is None or not out.exists():
        return "nothing was written"
    return f"every finished unit and epoch is kept in {out}; rerun the same command to resume"


def _command(argv: list[str]) -> str:
    """The shell command of ``crossdistill argv``, with ``$CROSSDISTILL_DATA`` when it is set
    (what a run directory's ``command.txt`` holds)."""
    data = os.environ.get("CROSSDISTILL_DATA")
    prefix = f"CROSSDISTILL_DATA={shlex.quote(data)} " if data else ""
    return prefix + shlex.join(["crossdistill", *argv])


def _import(module: str) -> None:
    """Import ``module``: a dotted module name, or the path of a ``.py`` file.

    Raises:
        CrossdistillError: it cannot be found, or running it failed (an exception, a syntax
            error, ``sys.exit``): the message names it, the line and the error.
    """
    path = Path(module)
    if module.endswith(".py") and not path.is_file():
        raise CrossdistillError(f"--import {module}: no such file")
    try:
        if not module.endswith(".py"):
            importlib.import_module(module)
            return
        spec = importlib.util.spec_from_file_location(path.stem, path)
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = loaded
        spec.loader.exec_module(loaded)
    except SystemExit as stop:
        raise CrossdistillError(f"--import {module}: it called sys.exit({stop.code!r})") from None
    except Exception as error:  # a user's code failed: name where, never a traceback
        if module.endswith(".py"):
            sys.modules.pop(path.stem, None)
        raise CrossdistillError(f"--import {module}: {_failure(error, module)}") from None


def _failure(error: Exception, module: str) -> str:
    """``error`` in one line, with the line of ``module``'s code that raised it."""
    if isinstance(error, SyntaxError):
        return f"line {error.lineno}: SyntaxError: {error.msg}"
    frames = traceback.extract_tb(error.__traceback__)
    mine = [f for f in frames if Path(f.filename).resolve() == Path(module).resolve()]
    where = f"line {mine[-1].lineno}: " if mine else ""
    text = (str(error).strip().splitlines() or [""])[0]
    return f"{where}{type(error).__name__}" + (f": {text}" if text else "")


if __name__ == "__main__":
    sys.exit(main())
