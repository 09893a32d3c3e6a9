"""`crossdistill report`: one self-contained HTML page and its Markdown twin over run
directories — titled and headed by the experiments, with the papers' claims and the built-in
experiments not run and why — and the committed report of results/."""

from __future__ import annotations

import html
import json
import re
import shlex
from pathlib import Path

import pytest

from crossdistill.cli import main
from crossdistill.experiments import builtin_configs
from crossdistill.experiments.report import ReportError, read_run, write_report

TINY_DIGITS = [
    "teachers.teacher.train.epochs=2",
    "student.train.epochs=2",
    "arms.teacher.lam=[0.5]",
    "arms.teacher.temperature=2",
    "seeds=[0]",
]
RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.fixture()
def run_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CROSSDISTILL_DATA", "../shared data")
    assert main(["run", "digits", *TINY_DIGITS, "--out", "runs/tiny", "--quiet"]) == 0
    return tmp_path / "runs" / "tiny"


def test_a_run_records_its_command(run_dir) -> None:
    command = (run_dir / "command.txt").read_text().strip()
    assert shlex.split(command) == [
        "CROSSDISTILL_DATA=../shared data",
        "crossdistill",
        "run",
        "digits",
        *TINY_DIGITS,
        "--out",
        "runs/tiny",
        "--quiet",
    ]


def test_report_holds_tables_figures_config_command_and_claims(run_dir, tmp_path) -> None:
    claims = tmp_path / "claims.yaml"
    claims.write_text(
        "- {experiment: tiny, paper: Hinton et al. 2015, claim: the teacher helps, held: in part, "
        "numbers: 0.9 vs 0.8}\n"
    )
    assert main(["report", str(run_dir), "--claims", str(claims), "--out", "out/page"]) == 0
    page = (tmp_path / "out" / "page.html").read_text()
    twin = (tmp_path / "out" / "page.md").read_text()
    figures = sorted((run_dir / "figures").rglob("*.png"))
    assert figures and page.count('src="data:image/png;base64,') == len(figures)
    assert "<td><strong>in part</strong></td>" in page and "| **in part** |" in twin
    assert "<th>paper</th>" in page and "| paper | experiment | claim | held? | numbers |" in twin
    assert "<td>Hinton et al. 2015</td>" in page and "| Hinton et al. 2015 | `tiny` |" in twin
    for text in (page, twin):
        assert "crossdistill run digits" in text and "no_teacher" in text
        assert "student.train.epochs=2" in text  # the resolved config, not only the command
        assert "imagenet_style" in text.split("Not run here")[1]  # built-ins with no run
    assert "<table>" in page and "| arm |" in twin
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", twin)
    assert len(links) == len(figures)
    assert all((tmp_path / "out" / link).resolve().is_file() for link in links)


def test_report_refuses_what_is_not_a_finished_run_and_a_bad_claim(run_dir, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="empty: not a finished run directory"):
        read_run(tmp_path / "empty")
    claims = tmp_path / "claims.yaml"
    claims.write_text("- {experiment: nope, paper: p, claim: c, held: held, numbers: n}\n")
    with pytest.raises(ReportError, match="claim 1: field 'experiment': 'nope'"):
        write_report([run_dir], tmp_path / "r", claims)
    claims.write_text("- {experiment: tiny, paper: p, claim: c, held: maybe, numbers: n}\n")
    with pytest.raises(ReportError, match="field 'held'"):
        write_report([run_dir], tmp_path / "r", claims)
    assert main(["report", str(tmp_path / "empty")]) == 2


def test_committed_report_is_current_and_covers_every_experiment(tmp_path) -> None:
    runs = sorted(p for p in RESULTS.iterdir() if p.is_dir())
    page, _ = write_report(runs, tmp_path / "report", RESULTS / "claims.yaml")
    assert page.read_text() == (RESULTS / "report.html").read_text()
    twin = (RESULTS / "report.md").read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", twin) + re.findall(r"\]\((\S+\.\w+)\)", twin)
    assert links and all((RESULTS / link).is_file() for link in links)
    sections = re.findall(r"^## `([^`]+)`", twin, re.M)  # named by config, not by folder
    assert sections == [read_run(run).name for run in runs]
    covered = {read_run(run).name for run in runs} | set(
        re.findall(r"`([^`]+)`", twin.split("## Not run here")[1])
    )
    assert set(builtin_configs()) <= covered
    assert all((run / "command.txt").is_file() for run in runs)


TABLE = "| arm | test accuracy | seeds |\n|---|---|---|\n| no_teacher | 0.5000 | 1 |\n"
CLAIM = "- {experiment: tiny, paper: Tiny 2024, claim: it runs, held: held, numbers: '0.5'}\n"


def _finished_run(
    folder: Path, description: str = "A tiny run.", table: str = TABLE, name: str = "tiny"
) -> Path:
    """A finished run directory written by hand: its config, inputs record and table."""
    folder.mkdir(parents=True)
    config = f"name: {name}\ndescription: {json.dumps(description)}\n"
    (folder / "config.yaml").write_text(config)
    (folder / "inputs.json").write_text("{}\n")
    (folder / "table.md").write_text(table)
    return folder


@pytest.fixture()
def hand_run(tmp_path, monkeypatch) -> Path:
    """``runs/tiny`` (finished, with a figure and the command) and ``claims.yaml`` about it, in
    the working directory ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    run = _finished_run(tmp_path / "runs" / "tiny")
    (run / "figures").mkdir()
    (run / "figures" / "accuracy.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (run / "command.txt").write_text("crossdistill run tiny --out runs/tiny\n")
    (tmp_path / "claims.yaml").write_text(CLAIM)
    return run


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (``None`` for a folder or a link to one)."""
    return {
        str(path.relative_to(root)): path.read_bytes() if path.is_file() else None
        for path in sorted(root.rglob("*"))
    }


def _assert_refused(capsys, root: Path, argv: list[str], *expected: str) -> None:
    """``crossdistill argv`` exits with 2 and one error line holding every ``expected``, and
    writes nothing under ``root``."""
    before = _tree(root)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.startswith("crossdistill: error: ") and captured.err.count("\n") == 1
    for text in expected:
        assert text in captured.err
    assert _tree(root) == before


@pytest.mark.parametrize(
    ("out", "holder", "why"),
    [
        ("runs/tiny/table", "runs/tiny", "replacing its table.md"),  # over the run's own table
        ("runs/tiny/figures/report", "runs/tiny", "choose an --out outside"),  # inside it
        ("runs/claimed/report", "runs/claimed", "choose an --out outside"),  # a run not given
        ("linked/table", "runs/tiny", "replacing its table.md"),  # a link to the run
    ],
)
def test_report_refuses_to_write_into_a_run_directory(
    hand_run, tmp_path, capsys, out, holder, why
) -> None:
    claimed = tmp_path / "runs" / "claimed"  # claimed by a run still going: no table yet
    claimed.mkdir()
    (claimed / "config.yaml").write_text("name: claimed\n")
    (claimed / "inputs.json").write_text("{}\n")
    (tmp_path / "linked").symlink_to(hand_run, target_is_directory=True)
    where = f"would be written into the run directory {(tmp_path / holder).resolve()}"
    _assert_refused(capsys, tmp_path, ["report", "runs/tiny", "--out", out], where, why)
    assert (hand_run / "table.md").read_text() == TABLE
    assert main(["report", "runs/tiny", "--out", "report"]) == 0
    assert (tmp_path / "report.md").is_file() and (tmp_path / "report.html").is_file()


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "runs/tiny/table.md",
            b"| arm \xff |\n",
            "table.md: expected UTF-8 text, found the byte 0xff",
        ),
        ("runs/tiny/command.txt", b"caf\xe9\n", "command.txt: expected UTF-8 text"),
        ("runs/tiny/config.yaml", b"name: [tiny\n", "config.yaml: expected YAML, found a syntax"),
        (
            "runs/tiny/config.yaml",
            b"- name\n- tiny\n",
            "expected a mapping of config fields, found list",
        ),
        ("runs/tiny/config.yaml", b"tiny\n", "expected a mapping of config fields, found str"),
        ("claims.yaml", b"- {experiment: tiny\n", "claims.yaml: expected YAML, found a syntax"),
        ("claims.yaml", b"caf\xe9\n", "claims.yaml: expected UTF-8 text"),
        ("runs/tiny/figures/accuracy.png", None, "accuracy.png: cannot read it (Is a directory)"),
    ],
)
def test_report_names_an_input_file_it_cannot_read(
    hand_run, tmp_path, capsys, name, content, expected
) -> None:
    broken = tmp_path / name
    kept = broken.read_bytes()
    broken.unlink()
    if content is None:  # a file that cannot be read (a folder in its place)
        broken.mkdir()
    else:
        broken.write_bytes(content)
    argv = ["report", "runs/tiny", "--claims", "claims.yaml", "--out", "report"]
    _assert_refused(capsys, tmp_path, argv, name, expected)
    if content is None:
        broken.rmdir()
    broken.write_bytes(kept)
    assert main(argv) == 0


@pytest.mark.parametrize(
    ("out", "expected"),
    [
        pytest.param(
            "/proc/x/report",
            "cannot write /proc/x",
            marks=pytest.mark.skipif(not Path("/proc").is_dir(), reason="no /proc"),
        ),
        ("somefile.txt/report", "somefile.txt is a file, not a folder"),
    ],
)
def test_report_names_an_out_it_cannot_write(hand_run, tmp_path, capsys, out, expected) -> None:
    (tmp_path / "somefile.txt").write_text("not a folder\n")
    _assert_refused(
        capsys, tmp_path, ["report", "runs/tiny", "--out", out], f"--out {out}", expected
    )
    assert main(["report", "runs/tiny", "--out", "report"]) == 0


def test_markdown_twin_shows_html_in_user_text_as_text(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    script, image = "<script>alert(1)</script>", "<img src=x onerror=alert(1)>"
    run = _finished_run(
        tmp_path / "runs" / "tiny",
        description=f"{script} & more",
        table=TABLE.replace("no_teacher", image),
    )
    command = f"crossdistill run tiny\n```\n{script}"  # would close a ``` fence
    (run / "command.txt").write_text(command)
    (tmp_path / "claims.yaml").write_text(CLAIM.replace("it runs", script))
    assert main(["report", "runs/tiny", "--claims", "claims.yaml", "--out", "report"]) == 0
    twin, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    escaped_script, escaped_image = html.escape(script, quote=False), html.escape(image)
    assert f"\n## `tiny`: {escaped_script} &amp; more\n" in twin  # the heading's first sentence
    assert f"\n| {escaped_image} | 0.5000 | 1 |\n" in twin  # the table still a pipe table
    assert f"| `tiny` | {escaped_script} | **held** |" in twin
    assert f"\n````bash\n{command}\n````\n" in twin  # a fence the command cannot close
    outside_code = re.sub(r"^(`{3,})\w*\n.*?\n\1$", "", twin, flags=re.M | re.S)
    assert "<script" not in outside_code and "<img" not in outside_code
    assert "<script" not in page and "<img" not in page
    assert html.escape(script) in page and html.escape(image) in page


def _report(argv: list[str]) -> tuple[str, str]:
    """``crossdistill report argv --out report`` in the working directory: (Markdown, HTML)."""
    assert main(["report", *argv, "--out", "report"]) == 0
    return Path("report.md").read_text(), Path("report.html").read_text()


def test_the_title_names_the_experiments_reported(hand_run, tmp_path) -> None:
    twin, page = _report(["runs/tiny"])
    assert twin.startswith("# crossdistill results: tiny\n")
    assert "<title>crossdistill results: tiny</title>" in page
    assert "<h1>crossdistill results: tiny</h1>" in page
    names = ["alpha", "beta", "gamma", "delta", "epsilon"]
    for name in names:
        _finished_run(tmp_path / "more" / name, f"The {name} run.", name=name)
    folders = [f"more/{name}" for name in names]
    twin, page = _report(["runs/tiny", *folders[:3]])
    assert twin.startswith("# crossdistill results: tiny, alpha, beta, gamma\n")
    twin, page = _report(["runs/tiny", *folders])
    title = "crossdistill results: 6 experiments (tiny, alpha, beta, …)"
    assert twin.startswith(f"# {title}\n") and f"<title>{title}</title>" in page
    listed = "Experiments reported (6): " + ", ".join(f"`{n}`" for n in ["tiny", *names])
    assert listed in twin  # every one by name under the title
    assert '<a href="#epsilon"><code>epsilon</code></a>' in page


def test_a_section_is_headed_by_the_config_name_and_the_description_s_first_sentence(
    hand_run, tmp_path
) -> None:
    description = "Distillation on tiny data (Hinton et al. 2015): a student. More detail here."
    _finished_run(tmp_path / "elsewhere" / "folder_name", description, name="tiny_config")
    command = "crossdistill run tiny_config student.train.epochs=2 --out elsewhere/folder_name\n"
    (tmp_path / "elsewhere" / "folder_name" / "command.txt").write_text(command)
    twin, page = _report(["runs/tiny", "elsewhere/folder_name"])
    first = "Distillation on tiny data (Hinton et al. 2015): a student."
    assert (
        f"\n## `tiny_config` with `student.train.epochs=2`: {first}\n\nMore detail here.\n" in twin
    )
    assert "\n## `tiny`: A tiny run.\n" in twin
    assert "## `folder_name`" not in twin  # a folder name never heads a section
    assert (
        '<h2 id="folder_name"><code>tiny_config</code> with '
        f"<code>student.train.epochs=2</code>: {first}</h2>\n<p>More detail here.</p>"
    ) in page


def _not_run(twin: str, name: str) -> str:
    """The line of the "Not run here" section about the built-in experiment ``name``."""
    section = twin.split("\n## Not run here\n")[1]
    return next(line for line in section.splitlines() if line.startswith(f"- `{name}` "))


def test_not_run_names_the_data_that_is_missing(hand_run) -> None:
    twin, page = _report(["runs/tiny"])  # no $CROSSDISTILL_DATA and an empty cache
    identity = _not_run(twin, "fmnist_identity")
    assert "Its data is not on this machine: Fashion-MNIST" in identity
    assert "fashion-mnist/" in identity and "in mnist/" not in identity  # only what it needs
    assert "MNIST (its four official files in mnist/" in _not_run(twin, "vae_cross_domain")
    assert "CIFAR-10 (its batch files in cifar10-subset/" in _not_run(twin, "grow_cifar10")
    style = _not_run(twin, "imagenet_style")
    assert "Imagenette (train/ and val/ in imagenette2-160/" in style
    assert "VGG-19 weights ($CROSSDISTILL_DATA/vgg19/vgg19.pth)" in style
    office = _not_run(twin, "office_dslr_webcam_amazon")
    assert "Office-31 features of the amazon, dslr and webcam domains" in office
    for embedded in ("digits", "regression_diabetes", "gd_synthetic"):
        line = _not_run(twin, embedded)
        assert line.endswith("No run directory given for it (its data is on this machine).")
    assert _not_run(twin, "digits").startswith(
        "- `digits` — Quick demo of knowledge distillation"  # the description's first sentence
    )
    assert "Its data is not on this machine: Fashion-MNIST" in page
    assert "(their data is not on this machine)" not in twin + page  # no blanket reason


def test_not_run_with_the_data_here_says_no_run_directory_was_given(
    hand_run, monkeypatch, data_root
) -> None:
    monkeypatch.setenv("CROSSDISTILL_DATA", str(data_root))
    twin, _ = _report(["runs/tiny"])
    for name in ("fmnist_identity", "vae_cross_domain", "grow_cifar10", "cifar_style"):
        assert _not_run(twin, name).endswith(
            "No run directory given for it (its data is on this machine)."
        )
    assert "Office-31 features" in _not_run(twin, "office_dslr_amazon")


def test_claims_name_their_paper_and_the_old_seed_field_is_refused(hand_run, capsys) -> None:
    twin, page = _report(["runs/tiny", "--claims", "claims.yaml"])
    assert "## Claims of the papers, checked against these runs" in twin
    assert "| Tiny 2024 | `tiny` | it runs | **held** | 0.5 |" in twin
    assert "<th>paper</th>" in page and "seed" not in twin.split("## `tiny`")[0].lower()
    capsys.readouterr()
    Path("claims.yaml").write_text(CLAIM.replace("paper: Tiny 2024", "seed: '001'"))
    _assert_refused(
        capsys,
        Path.cwd(),
        ["report", "runs/tiny", "--claims", "claims.yaml", "--out", "report"],
        "claims.yaml: claim 1: field 'seed'",
        "'paper'",
    )
    Path("claims.yaml").write_text(CLAIM.replace("paper: Tiny 2024", "paper: ''"))
    with pytest.raises(ReportError, match="claim 1: field 'paper': expected the paper"):
        write_report([hand_run], Path("report"), Path("claims.yaml"))
