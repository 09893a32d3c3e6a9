"""The ``crossdistill`` command: ``run CONFIG [key=value ...] [--out DIR]`` and ``list``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .data import DataFormatError
from .experiments.config import ConfigError, builtin_configs, load_config
from .experiments.runner import run_experiment


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
    commands.add_parser("list", help="list the built-in experiments")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, path in sorted(builtin_configs().items()):
            description = load_config(path).description.strip().splitlines()[0:1]
            print(f"{name:26s} {description[0] if description else ''}")
        return 0
    try:
        config = load_config(args.config, args.overrides)
        out = args.out or Path("runs") / config.name
        print(f"running {config.name} into {out}", file=sys.stderr)
        run_experiment(config, out, progress=not args.quiet)
    except (ConfigError, DataFormatError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"crossdistill: error: {error}", file=sys.stderr)
        return 2
    print((out / "table.md").read_text())
    files = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
    print(f"outputs in {out}/ ({', '.join(files)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
