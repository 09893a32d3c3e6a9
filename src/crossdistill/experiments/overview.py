"""One page over many run directories (``crossdistill report RUN_DIR ...``): every experiment's
table, figures, resolved config and command, and a summary of the seeds' claims.

The page is written twice: ``<out>.html``, self-contained (figures embedded as data URIs), and
``<out>.md``, its Markdown twin (figures linked by relative path).
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import CrossdistillError
from ..files import write_if_changed
from .config import builtin_configs

HELD = ("held", "not held", "in part")
"""What a claim's ``held`` says."""


class ReportError(CrossdistillError, ValueError):
    """A directory that holds no finished run, or a claims file that cannot be read."""


@dataclass
class Run:
    """A finished run directory: its config's ``name`` and ``description``, the resolved
    config text, its ``table.md``, its figures and the command that produced it (``None``
    when ``command.txt`` is absent)."""

    directory: Path
    name: str
    description: str
    config: str
    table: str
    figures: list[Path]
    command: str | None

    @property
    def label(self) -> str:
        """The directory's name: what a report section and a claim's ``experiment`` use."""
        return self.directory.name


def read_run(directory: Path) -> Run:
    """The finished run in ``directory``.

    Raises:
        ReportError: it has no ``config.yaml`` or no ``table.md`` (not a finished run).
    """
    directory = Path(directory)
    config_file, table_file = directory / "config.yaml", directory / "table.md"
    for needed in (config_file, table_file):
        if not needed.is_file():
            raise ReportError(f"{directory}: not a finished run directory (no {needed.name})")
    config = config_file.read_text()
    fields = yaml.safe_load(config) or {}
    command = directory / "command.txt"
    return Run(
        directory=directory,
        name=str(fields.get("name", directory.name)),
        description=" ".join(str(fields.get("description", "")).split()),
        config=config,
        table=table_file.read_text(),
        figures=sorted((directory / "figures").rglob("*.png")),
        command=command.read_text().strip() if command.is_file() else None,
    )


def read_claims(path: Path, runs: Sequence[Run]) -> list[dict]:
    """The claims of ``path``: a YAML list of ``{experiment, seed, claim, held, numbers}``,
    ``experiment`` the directory name of one of ``runs`` and ``held`` one of `HELD`.

    Raises:
        ReportError: the file is missing or malformed (the message names the entry and field).
    """
    try:
        claims = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ReportError(f"{path}: cannot read the claims: {error}") from None
    if not isinstance(claims, list):
        raise ReportError(f"{path}: expected a list of claims, found {type(claims).__name__}")
    labels = {run.label for run in runs}
    fields = ("experiment", "seed", "claim", "held", "numbers")
    for index, claim in enumerate(claims):
        where = f"{path}: claim {index + 1}"
        if not isinstance(claim, dict) or set(claim) != set(fields):
            found = sorted(claim) if isinstance(claim, dict) else claim
            raise ReportError(f"{where}: expected the fields {', '.join(fields)}, found {found}")
        if claim["experiment"] not in labels:
            raise ReportError(
                f"{where}: field 'experiment': {claim['experiment']!r} is none of the runs "
                f"reported ({', '.join(sorted(labels))})"
            )
        if claim["held"] not in HELD:
            raise ReportError(
                f"{where}: field 'held': expected one of {', '.join(HELD)}, found {claim['held']!r}"
            )
    return claims


def write_report(
    directories: Sequence[Path], out: Path, claims: Path | None = None
) -> tuple[Path, Path]:
    """Write the page over the runs in ``directories`` as ``<out>.html`` and ``<out>.md``.

    Built-in experiments (`builtin_configs`) with no run among them are listed as not run.

    Returns:
        The HTML and the Markdown file.
    """
    runs = [read_run(directory) for directory in directories]
    found = read_claims(claims, runs) if claims is not None else []
    out = Path(out)
    page, twin = out.with_suffix(".html"), out.with_suffix(".md")
    missing = sorted(set(builtin_configs()) - {run.name for run in runs})
    write_if_changed(twin, _markdown(runs, found, missing, twin.parent))
    write_if_changed(page, _html(runs, found, missing))
    return page, twin


def _claims_rows(claims: list[dict]) -> list[list[str]]:
    return [
        [
            str(c["seed"]),
            f"`{c['experiment']}`",
            str(c["claim"]),
            f"**{c['held']}**",
            str(c["numbers"]),
        ]
        for c in claims
    ]


CLAIM_HEADER = ["seed", "experiment", "claim", "held?", "numbers"]


def _markdown(runs: list[Run], claims: list[dict], missing: list[str], base: Path) -> str:
    lines = ["# crossdistill: every result", ""]
    if claims:
        lines += ["## The seeds' claims", "", _pipe_table(CLAIM_HEADER, _claims_rows(claims)), ""]
    for run in runs:
        lines += [f"## `{run.label}`", ""]
        if run.description:
            lines += [run.description, ""]
        lines += [
            f"```bash\n{run.command or '(command not recorded)'}\n```",
            "",
            run.table.strip(),
            "",
        ]
        links = [f"![{run.label} {f.stem}]({_relative(f, base)})" for f in run.figures]
        if links:
            lines += [" ".join(links), ""]
        lines += [
            "<details><summary>resolved config</summary>",
            "",
            "```yaml",
            run.config.strip(),
            "```",
            "",
            "</details>",
            "",
        ]
    if missing:
        lines += [
            "## Not run here",
            "",
            ", ".join(f"`{name}`" for name in missing)
            + ": built-in experiments with no run directory among those reported "
            "(their data is not on this machine).",
            "",
        ]
    return "\n".join(lines)


def _html(runs: list[Run], claims: list[dict], missing: list[str]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>crossdistill: every result</title>',
        f"<style>{_STYLE}</style></head><body>",
        "<h1>crossdistill: every result</h1>",
    ]
    if claims:
        parts += ["<h2>The seeds' claims</h2>", _html_table(CLAIM_HEADER, _claims_rows(claims))]
    for run in runs:
        parts.append(
            f'<h2 id="{html.escape(run.label)}"><code>{html.escape(run.label)}</code></h2>'
        )
        if run.description:
            parts.append(f"<p>{html.escape(run.description)}</p>")
        parts.append(f"<pre>{html.escape(run.command or '(command not recorded)')}</pre>")
        parts.append(_markdown_to_html(run.table))
        for figure in run.figures:
            data = base64.b64encode(figure.read_bytes()).decode()
            parts.append(
                f'<img alt="{html.escape(run.label)} {html.escape(figure.stem)}" '
                f'src="data:image/png;base64,{data}">'
            )
        parts.append(
            f"<details><summary>resolved config</summary><pre>{html.escape(run.config)}</pre>"
            "</details>"
        )
    if missing:
        names = ", ".join(f"<code>{html.escape(n)}</code>" for n in missing)
        parts.append(
            f"<h2>Not run here</h2><p>{names}: built-in experiments with no run directory among "
            "those reported (their data is not on this machine).</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


_STYLE = (
    "body{font-family:sans-serif;max-width:80em;margin:auto;padding:1em}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px}"
    "img{max-width:48%;margin:2px}pre{background:#f4f4f4;padding:6px;overflow-x:auto}"
)


def _relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def _pipe_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Escaped text with Markdown's `code` and **bold**."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_inline(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _markdown_to_html(text: str) -> str:
    """A ``table.md``'s paragraphs and pipe tables as HTML (the subset the runs write)."""
    out, table, paragraph = [], [], []

    def flush() -> None:
        if paragraph:
            out.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()
        if table:
            cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table]
            rows = [row for row in cells[1:] if not all(set(c) <= set("-:") for c in row)]
            out.append(_html_table(cells[0], rows))
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            if paragraph:
                flush()
            table.append(line)
        elif line.strip():
            if table:
                flush()
            paragraph.append(line.strip())
        else:
            flush()
    flush()
    return "\n".join(out)
