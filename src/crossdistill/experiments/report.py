"""One page over many run directories (``crossdistill report RUN_DIR ...``): every experiment's
table, figures, resolved config and command, a summary of the papers' claims checked against
them, and the built-in experiments not among them with the reason (their data missing here, or
no run directory given).

The page is written twice: ``<out>.html``, self-contained (figures embedded as data URIs), and
``<out>.md``, its Markdown twin (figures linked by relative path).
"""

from __future__ import annotations

import base64
import html
import os
import re
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import yaml

from ..builtin import first_sentence
from ..data.cifar import CIFAR10_FILES, CIFAR10_FOLDER
from ..data.datasets import IDX_FOLDERS, MNIST_10K_NAMES, OFFICIAL_IDX_NAMES
from ..data.imagenette import IMAGENETTE_FOLDER, IMAGENETTE_PARTS
from ..data.office import feature_file_names
from ..data.sources import search_places
from ..errors import CrossdistillError
from ..files import write_if_changed
from ..models.vgg import KNOWN_WEIGHTS, default_weights_path
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
        """The directory's name: what a claim's ``experiment`` names, and the anchor of the
        run's section in the HTML page."""
        return self.directory.name

    @property
    def overrides(self) -> list[str]:
        """The ``key=value`` settings the recorded command gave after the config (none when
        there is no command): what makes the run a variant of its config."""
        if self.command is None:
            return []
        try:
            words = shlex.split(self.command)
        except ValueError:  # unbalanced quotes: show no variant rather than fail
            return []
        if "run" not in words:
            return []
        found, rest = [], iter(words[words.index("run") + 2 :])
        for word in rest:
            if word in _RUN_OPTIONS_WITH_VALUE:
                next(rest, None)
            elif "=" in word and not word.startswith("-"):
                found.append(word)
        return found

    @property
    def heading(self) -> str:
        """The config's name, its overrides if any, and the description's first sentence, as
        Markdown: what the run's section is titled."""
        variant = f" with {_code(' '.join(self.overrides))}" if self.overrides else ""
        summary = first_sentence(self.description)
        return f"{_code(self.name)}{variant}" + (f": {_text(summary)}" if summary else "")

    @property
    def details(self) -> str:
        """The description after its first sentence ("" when it has one sentence)."""
        return self.description[len(first_sentence(self.description)) :].strip()


_RUN_OPTIONS_WITH_VALUE = ("--out", "--device", "--processes", "--import")
"""The options of ``crossdistill run`` followed by a value (not an override)."""


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


CLAIM_FIELDS = ("experiment", "paper", "claim", "held", "numbers")
"""The fields of a claim: the run directory's name, the paper the claim comes from (short, e.g.
``Hinton et al. 2015``, or ``crossdistill (this library)`` for its own), the claim, whether it
held (one of `HELD`) and the numbers that say so."""


def read_claims(path: Path, runs: Sequence[Run]) -> list[dict]:
    """The claims of ``path``: a YAML list of `CLAIM_FIELDS` mappings, ``experiment`` the
    directory name of one of ``runs``, ``paper`` a non-empty text and ``held`` one of `HELD`.

    Raises:
        ReportError: the file is missing or malformed (the message names the entry and field;
            the former field ``seed`` is refused naming ``paper``, its replacement).
    """
    claims = _parse_yaml(_read_text(path), path)
    if not isinstance(claims, list):
        raise ReportError(f"{path}: expected a list of claims, found {type(claims).__name__}")
    labels = sorted(run.label for run in runs)
    fields = CLAIM_FIELDS
    for index, claim in enumerate(claims):
        where = f"{path}: claim {index + 1}"
        if isinstance(claim, dict) and "seed" in claim:
            raise ReportError(
                f"{where}: field 'seed': no longer read; name the paper the claim comes from in "
                "the field 'paper' instead (e.g. paper: Hinton et al. 2015)"
            )
        if not isinstance(claim, dict) or set(claim) != set(fields):
            found = sorted(map(str, claim)) if isinstance(claim, dict) else claim
            raise ReportError(f"{where}: expected the fields {', '.join(fields)}, found {found}")
        if claim["experiment"] not in labels:
            raise ReportError(
                f"{where}: field 'experiment': {claim['experiment']!r} is none of the runs "
                f"reported ({', '.join(labels)})"
            )
        if not isinstance(claim["paper"], str) or not claim["paper"].strip():
            raise ReportError(
                f"{where}: field 'paper': expected the paper the claim comes from (e.g. Hinton "
                f"et al. 2015), found {claim['paper']!r}"
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

    Built-in experiments (`builtin_configs`) with no run among them are listed as not run,
    each with the reason: the data files it needs that are on no place the data layer looks in
    (`missing_data`), or else no run directory given for it. Nothing is written when any input
    cannot be read or ``out`` is refused.

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
    missing = [
        not_run(name, path)
        for name, path in sorted(builtin_configs().items())
        if name not in {run.name for run in runs}
    ]
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
            text(str(c["paper"])),
            _code(c["experiment"]),
            text(str(c["claim"])),
            f"**{c['held']}**",
            text(str(c["numbers"])),
        ]
        for c in claims
    ]


CLAIM_HEADER = ["paper", "experiment", "claim", "held?", "numbers"]
CLAIMS_HEADING = "Claims of the papers, checked against these runs"
NOT_RUN_HEADING = "Not run here"


@dataclass
class NotRun:
    """A built-in experiment with no run among those reported: its name, the first sentence of
    its description, and why it was not run, as a sentence."""

    name: str
    summary: str
    reason: str


def not_run(name: str, path: Path) -> NotRun:
    """The built-in experiment ``name`` (config file ``path``) as not run: the reason is the
    data it needs that is not on this machine (`missing_data`), or else that no run directory
    was given for it."""
    fields = _parse_yaml(_read_text(path), path)
    fields = fields if isinstance(fields, dict) else {}
    description = fields.get("description")
    missing = missing_data(fields)
    if missing:
        reason = f"Its data is not on this machine: {'; '.join(missing)}."
    else:
        reason = "No run directory given for it (its data is on this machine)."
    summary = first_sentence(description) if isinstance(description, str) else ""
    return NotRun(name, summary, reason)


def missing_data(config: object) -> list[str]:
    """What of a config's data and weight files is on none of the places the data layer looks
    in (`search_places`: ``$CROSSDISTILL_DATA``, then the cache), one phrase each, naming the
    dataset and the files or folder it lacks. Embedded and generated data is never missing;
    data made from other datasets (GeneratedMNIST, the VAE translator) needs theirs.

    ``config`` is the config as read from YAML; every mapping with a ``name`` below its top
    level is a component spec, looked up by that name.
    """
    found: list[str] = []
    office: dict[str, list[str]] = {}  # folder → its missing domains: one phrase for them all
    for spec in _specs(list(config.values()) if isinstance(config, Mapping) else []):
        if spec["name"] == "office31":
            domain, folder = str(spec.get("domain")), str(spec.get("folder", "office31"))
            files = feature_file_names(domain)
            if not any(_held(folder, (file,)) for file in files):
                office.setdefault(folder, [])
                if domain not in office[folder]:
                    office[folder].append(domain)
            continue
        for what in _missing_of(spec):
            if what not in found:
                found.append(what)
    for folder, domains in office.items():
        domains.sort()
        listed = " and ".join(", ".join(domains).rsplit(", ", 1))
        *examples, last = feature_file_names(domains[0])[:4]
        found.append(
            f"the Office-31 features of the {listed} domain{'s' * (len(domains) > 1)} (one "
            f"file per domain in {folder}/, e.g. {', '.join(examples)} or {last})"
        )
    return found


def _specs(value: object) -> Iterator[Mapping]:
    """Every mapping with a text ``name`` in ``value`` (mappings and lists), depth first."""
    if isinstance(value, Mapping):
        if isinstance(value.get("name"), str):
            yield value
        children: Sequence[object] = list(value.values())
    elif isinstance(value, list):
        children = value
    else:
        return
    for child in children:
        yield from _specs(child)


_IDX_TITLES = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST"}
"""The MNIST-like datasets of four official files, by their titles."""

_DOWNLOADS = "a run downloads it when online"


def _missing_of(spec: Mapping) -> list[str]:
    """What the component ``spec`` needs that is not here (see `missing_data`)."""
    name = spec["name"]
    if name in ("generated_mnist", "vae_translator"):  # made from both, by the translator
        return [*_missing_of({"name": "fashion_mnist"}), *_missing_of({"name": "mnist"})]
    if name in _IDX_TITLES:
        title, folder = _IDX_TITLES[name], IDX_FOLDERS[name]
        if _held(folder, OFFICIAL_IDX_NAMES):
            return []
        return [f"{title} (its four official files in {folder}/; {_DOWNLOADS})"]
    if name == "mnist_10k":
        if _held(IDX_FOLDERS[name], MNIST_10K_NAMES):
            return []
        return [f"the 10 000-image MNIST sample ({IDX_FOLDERS[name]}/)"]
    if name in ("cifar10", "imagenette"):
        title, official, required = {
            "cifar10": ("CIFAR-10", CIFAR10_FOLDER, CIFAR10_FILES),
            "imagenette": ("Imagenette", IMAGENETTE_FOLDER, IMAGENETTE_PARTS),
        }[name]
        folder = str(spec.get("folder", official))
        if _held(folder, required):
            return []
        inside = "its batch files" if name == "cifar10" else "train/ and val/"
        download = f"; {_DOWNLOADS}" if folder == official else ""
        return [f"{title} ({inside} in {folder}/{download})"]
    if name in ("style_transfer", "fast_style_transfer"):
        return _missing_weights(spec)
    return []


def _missing_weights(spec: Mapping) -> list[str]:
    """The VGG weights and style image a style-transfer mapping ``spec`` needs, if not here."""
    missing = []
    arch = str(spec.get("arch", "vgg19"))
    known = KNOWN_WEIGHTS.get(arch)
    if known is not None:
        given = spec.get("weights")
        file = Path(str(given)).expanduser() if given is not None else default_weights_path(arch)
        if file is None or not file.is_file():
            where = given if given is not None else f"$CROSSDISTILL_DATA/{known.relative_path}"
            missing.append(f"the ImageNet VGG-{arch[3:]} weights ({where})")
    image = spec.get("style_image")
    local = isinstance(image, str) and not image.startswith("sklearn:")
    if local and not Path(image).expanduser().is_file():
        missing.append(f"the style image {image}")
    return missing


def _held(folder: str, required: Sequence[str]) -> bool:
    """Whether a place the data layer looks in holds ``folder`` with everything in
    ``required``."""
    try:
        places = search_places(folder, None)
    except ValueError:  # not a folder name: the run's own check says so
        return True
    return any(all((place / entry).exists() for entry in required) for place, _ in places)


def _title(runs: Sequence[Run]) -> str:
    """The page's title: the experiments reported, by name (a count and the first ones when
    there are more than four)."""
    names = list(dict.fromkeys(run.name for run in runs))
    if len(names) <= 4:
        shown = ", ".join(names) if names else "no runs"
    else:
        count = f"{len(runs)} runs of " if len(runs) != len(names) else ""
        shown = f"{count}{len(names)} experiments ({', '.join(names[:3])}, …)"
    return f"crossdistill results: {shown}"


def _contents(runs: Sequence[Run]) -> str:
    """The line under the title naming every run, in page order (Markdown)."""
    names = [
        _code(run.name) + (f" ({_text(run.label)})" if run.label != run.name else "")
        for run in runs
    ]
    return f"Experiments reported ({len(runs)}): " + ", ".join(names) + "."


def _markdown(runs: list[Run], claims: list[dict], missing: list[NotRun], base: Path) -> str:
    lines = [f"# {_text(_title(runs))}", ""]
    if len(runs) > 1:
        lines += [_contents(runs), ""]
    if claims:
        rows = _claims_rows(claims, _text)
        lines += [f"## {CLAIMS_HEADING}", "", _pipe_table(CLAIM_HEADER, rows), ""]
    for run in runs:
        lines += [f"## {run.heading}", ""]
        if run.details:
            lines += [_text(run.details), ""]
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
            f"## {NOT_RUN_HEADING}",
            "",
            "Built-in experiments with no run directory among those reported:",
            "",
        ]
        for item in missing:
            summary = f" — {_text(item.summary)}" if item.summary else ""
            lines.append(f"- {_code(item.name)}{summary} {_text(item.reason)}")
        lines.append("")
    return "\n".join(lines)


def _html(runs: list[Run], claims: list[dict], missing: list[NotRun]) -> str:
    title = html.escape(_title(runs))
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{title}</title>',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{title}</h1>",
    ]
    if len(runs) > 1:
        names = ", ".join(
            f'<a href="#{html.escape(run.label)}"><code>{html.escape(run.name)}</code></a>'
            + (f" ({html.escape(run.label)})" if run.label != run.name else "")
            for run in runs
        )
        parts.append(f"<p>Experiments reported ({len(runs)}): {names}.</p>")
    if claims:
        rows = _claims_rows(claims, str)
        parts += [f"<h2>{CLAIMS_HEADING}</h2>", _html_table(CLAIM_HEADER, rows)]
    for run in runs:
        parts.append(f'<h2 id="{html.escape(run.label)}">{_inline_heading(run)}</h2>')
        if run.details:
            parts.append(f"<p>{html.escape(run.details)}</p>")
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
        items = "".join(
            f"<li><code>{html.escape(item.name)}</code>"
            + (f" — {html.escape(item.summary)}" if item.summary else "")
            + f" {html.escape(item.reason)}</li>"
            for item in missing
        )
        parts.append(
            f"<h2>{NOT_RUN_HEADING}</h2><p>Built-in experiments with no run directory among "
            f"those reported:</p><ul>{items}</ul>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _inline_heading(run: Run) -> str:
    """A run's heading (`Run.heading`) as HTML."""
    variant = f" with <code>{html.escape(' '.join(run.overrides))}</code>" if run.overrides else ""
    summary = first_sentence(run.description)
    tail = f": {html.escape(summary)}" if summary else ""
    return f"<code>{html.escape(run.name)}</code>{variant}{tail}"


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
