"""The ``crossdistill`` command: ``run CONFIG [key=value ...] [--out DIR]`` and ``list``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

from .errors import CrossdistillError
from .experiments import builtin_configs, load_config, run_experiment


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``crossdistill`` command; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="crossdistill", description="Knowledge transfer between models and data domains."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run an experiment config")
    run.add_argument("config", help="a YAML file or the name of a built-in experiment")
    run.add_argument("overrides", nargs="*", help="key=value settings, e.g. seeds=[0,1]")
    run.add_argument("--out", type=Path, help="run directory (default: runs/<name>)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
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
    args, extra = parser.parse_known_args(argv)  # overrides may also follow the options
    unknown = [item for item in extra if item.startswith("-") or "=" not in item]
    if unknown or (extra and args.command != "run"):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides += extra

    if args.command == "list":
        for name, path in sorted(builtin_configs().items()):
            description = load_config(path).description.strip().splitlines()[0:1]
            print(f"{name:26s} {description[0] if description else ''}")
        return 0
    out = None
    try:
        for module in args.imports:
            _import(module)
        config = load_config(args.config, args.overrides)
        out = args.out or Path("runs") / config.name
        print(f"running {config.name} into {out}", file=sys.stderr)
        run_experiment(config, out, progress=not args.quiet)
    except KeyboardInterrupt:
        kept = (
            "nothing was written"
            if out is None or not out.exists()
            else f"every finished unit and epoch is kept in {out}; rerun the same command to resume"
        )
        print(f"crossdistill: interrupted; {kept}", file=sys.stderr)
        return 130
    except (CrossdistillError, ImportError, ValueError) as error:
        print(f"crossdistill: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # an unwritable or full --out, a file the user named
        print(f"crossdistill: error: {error.strerror or error}: {error.filename}", file=sys.stderr)
        return 2
    print((out / "table.md").read_text())
    files = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
    print(f"outputs in {out}/ ({', '.join(files)})")
    return 0


def _import(module: str) -> None:
    """Import ``module``: a dotted module name, or the path of a ``.py`` file."""
    if not module.endswith(".py"):
        importlib.import_module(module)
        return
    path = Path(module)
    if not path.is_file():
        raise ImportError(f"--import {module}: no such file")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = loaded
    spec.loader.exec_module(loaded)


if __name__ == "__main__":
    sys.exit(main())
