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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import yaml

from ..errors import CrossdistillError
from ..files import write_if_changed
from .config import builtin_configs

HELD = ("held", "not held", "in part")
"""What a claim's ``held`` says."""


class ReportError(CrossdistillError, ValueError):
    """A directory that holds no finished run, a run file or claims file that cannot be read,
    or an ``--out`` that cannot be written or lies in a run directory."""


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
        ReportError: it has no ``config.yaml`` or no ``table.md`` (not a finished run), one of
            its files cannot be read or is not UTF-8, or ``config.yaml`` is not a YAML mapping.
    """
    directory = Path(directory)
    config_file, table_file = directory / "config.yaml", directory / "table.md"
    command = directory / "command.txt"
    with _reading(directory):
        for needed in (config_file, table_file):
            if not needed.is_file():
                raise ReportError(f"{directory}: not a finished run directory (no {needed.name})")
        figures = sorted((directory / "figures").rglob("*.png"))
        has_command = command.is_file()
    config = _read_text(config_file)
    fields = _parse_yaml(config, config_file)
    if fields is None:  # an empty file
        fields = {}
    if not isinstance(fields, dict):
        raise ReportError(
            f"{config_file}: expected a mapping of config fields, found {type(fields).__name__}"
        )
    return Run(
        directory=directory,
        name=str(fields.get("name", directory.name)),
        description=" ".join(str(fields.get("description", "")).split()),
        config=config,
        table=_read_text(table_file),
        figures=figures,
        command=_read_text(command).strip() if has_command else None,
    )


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn a failure to read ``path`` (or a file in it) into a `ReportError` naming the file."""
    try:
        yield
    except OSError as error:
        why = error.strerror or error
        raise ReportError(f"{error.filename or path}: cannot read it ({why})") from None
    except UnicodeDecodeError as error:
        byte = error.object[error.start : error.start + 1].hex()
        raise ReportError(
            f"{path}: expected UTF-8 text, found the byte 0x{byte} at offset {error.start} "
            f"({error.reason})"
        ) from None


def _read_text(path: Path) -> str:
    """The UTF-8 text of ``path``; a `ReportError` naming it when it cannot be read."""
    with _reading(path):
        return Path(path).read_text(encoding="utf-8")


def _parse_yaml(text: str, path: Path) -> object:
    """``text``, the content of ``path``, parsed as YAML; a one-line `ReportError` naming the
    file and the place of a syntax error."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        raise ReportError(
            f"{path}: expected YAML, found a syntax error{where}: {problem}"
        ) from None


def read_claims(path: Path, runs: Sequence[Run]) -> list[dict]:
    """The claims of ``path``: a YAML list of ``{experiment, seed, claim, held, numbers}``,
    ``experiment`` the directory name of one of ``runs`` and ``held`` one of `HELD`.

    Raises:
        ReportError: the file is missing or malformed (the message names the entry and field).
    """
    claims = _parse_yaml(_read_text(path), path)
    if not isinstance(claims, list):
        raise ReportError(f"{path}: expected a list of claims, found {type(claims).__name__}")
    labels = sorted(run.label for run in runs)
    fields = ("experiment", "seed", "claim", "held", "numbers")
    for index, claim in enumerate(claims):
        where = f"{path}: claim {index + 1}"
        if not isinstance(claim, dict) or set(claim) != set(fields):
            found = sorted(map(str, claim)) if isinstance(claim, dict) else claim
            raise ReportError(f"{where}: expected the fields {', '.join(fields)}, found {found}")
        if claim["experiment"] not in labels:
            raise ReportError(
                f"{where}: field 'experiment': {claim['experiment']!r} is none of the runs "
                f"reported ({', '.join(labels)})"
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
    Nothing is written when any input cannot be read or ``out`` is refused.

    Returns:
        The HTML and the Markdown file.

    Raises:
        ReportError: a run or the claims cannot be read (`read_run`, `read_claims`), or ``out``
            cannot be written or would write into or over a run directory (`_check_target`).
    """
    runs = [read_run(directory) for directory in directories]
    found = read_claims(claims, runs) if claims is not None else []
    out = Path(out)
    if out.name in ("", ".", ".."):
        raise ReportError(f"--out {out}: expected a file name, to which .html and .md are added")
    page, twin = out.with_suffix(".html"), out.with_suffix(".md")
    missing = sorted(set(builtin_configs()) - {run.name for run in runs})
    texts = {twin: _markdown(runs, found, missing, twin.parent), page: _html(runs, found, missing)}
    try:
        for target in texts:
            _check_target(target, out, runs)
        for target, text in texts.items():
            write_if_changed(target, text)
    except OSError as error:
        why = error.strerror or error
        raise ReportError(f"--out {out}: cannot write {error.filename or out} ({why})") from None
    return page, twin


def _check_target(target: Path, out: Path, runs: Sequence[Run]) -> None:
    """Refuse to write ``target`` (a file of ``--out out``) where it cannot go: over a folder,
    under a file, or into or over a run directory — one of ``runs``, or any folder holding a
    run (`_holds_run`) — or anywhere inside one, where it could replace the run's own files."""
    if target.is_dir():
        raise ReportError(f"--out {out}: {target} is a folder, not a file the report can write")
    folder = next(parent for parent in target.parents if parent.exists())
    if not folder.is_dir():
        raise ReportError(
            f"--out {out}: {folder} is a file, not a folder to write {target.name} in"
        )
    given = {run.directory.resolve() for run in runs}
    for place in (target.parent.resolve() / target.name, target.resolve()):
        for holder in (place, *place.parents):
            if holder in given or _holds_run(holder):
                replacing = (
                    f", replacing its {place.relative_to(holder)}" if place.is_file() else ""
                )
                raise ReportError(
                    f"--out {out}: {target} would be written into the run directory "
                    f"{holder}{replacing}; choose an --out outside every run directory"
                )


def _holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds a run: a ``config.yaml`` with the record of the run's inputs
    (``inputs.json``, see `claim_directory`) or its final table (``table.md``)."""
    return (folder / "config.yaml").is_file() and any(
        (folder / name).is_file() for name in ("inputs.json", "table.md")
    )


def _claims_rows(claims: list[dict], text: Callable[[str], str]) -> list[list[str]]:
    """The claims' table cells in Markdown, each free-text field passed through ``text``."""
    return [
        [
            text(str(c["seed"])),
            _code(c["experiment"]),
            text(str(c["claim"])),
            f"**{c['held']}**",
            text(str(c["numbers"])),
        ]
        for c in claims
    ]


CLAIM_HEADER = ["seed", "experiment", "claim", "held?", "numbers"]


def _markdown(runs: list[Run], claims: list[dict], missing: list[str], base: Path) -> str:
    lines = ["# crossdistill: every result", ""]
    if claims:
        rows = _claims_rows(claims, _text)
        lines += ["## The seeds' claims", "", _pipe_table(CLAIM_HEADER, rows), ""]
    for run in runs:
        lines += [f"## {_code(run.label)}", ""]
        if run.description:
            lines += [_text(run.description), ""]
        lines += [
            _fenced(run.command or "(command not recorded)", "bash"),
            "",
            _text(run.table.strip()),
            "",
        ]
        links = [
            f"![{_text(run.label)} {_text(f.stem)}]({_relative(f, base)})" for f in run.figures
        ]
        if links:
            lines += [" ".join(links), ""]
        lines += [
            "<details><summary>resolved config</summary>",
            "",
            _fenced(run.config.strip(), "yaml"),
            "",
            "</details>",
            "",
        ]
    if missing:
        lines += [
            "## Not run here",
            "",
            ", ".join(_code(name) for name in missing)
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
        rows = _claims_rows(claims, str)
        parts += ["<h2>The seeds' claims</h2>", _html_table(CLAIM_HEADER, rows)]
    for run in runs:
        parts.append(
            f'<h2 id="{html.escape(run.label)}"><code>{html.escape(run.label)}</code></h2>'
        )
        if run.description:
            parts.append(f"<p>{html.escape(run.description)}</p>")
        parts.append(f"<pre>{html.escape(run.command or '(command not recorded)')}</pre>")
        parts.append(_markdown_to_html(run.table))
        for figure in run.figures:
            with _reading(figure):
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
    """``path`` as a URL relative to ``base`` (percent-encoded: safe in a Markdown link)."""
    return quote(Path(os.path.relpath(path.resolve(), base.resolve())).as_posix(), safe="/=,")


def _text(text: str) -> str:
    """User text for the Markdown twin: ``<``, ``>`` and ``&`` as character references, so that
    a renderer shows them instead of taking them for HTML, and no line of it opens a code
    fence."""
    return re.sub(r"^( {0,3})(?=```|~~~)", r"\1\\", html.escape(text, quote=False), flags=re.M)


def _backticks(text: str) -> str:
    """One more backtick than the longest run of them in ``text``: a fence it cannot close."""
    return "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)


def _code(text: str) -> str:
    """``text`` as a Markdown code span on one line (shown as it is, never as HTML)."""
    text = re.sub(r"\r\n?|\n", " ", text)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{_backticks(text)}{pad}{text}{pad}{_backticks(text)}"


def _fenced(text: str, language: str) -> str:
    """``text`` as a fenced Markdown code block (shown as it is: no line of it closes it)."""
    fence = max("```", _backticks(text), key=len)
    return f"{fence}{language}\n{text}\n{fence}"


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
