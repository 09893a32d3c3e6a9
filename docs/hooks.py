"""MkDocs hook: the committed results' figures (``results/*/figures/*.png``) are served beside
the results pages, at ``results/<experiment>/figures/...``, without copying them into docs/."""

from pathlib import Path

from mkdocs.structure.files import File

RESULTS = Path(__file__).resolve().parents[1] / "results"


def on_files(files, config):
    """Add every committed figure to the site's files."""
    for figure in sorted(RESULTS.glob("*/figures/**/*.png")):
        uri = figure.relative_to(RESULTS.parent).as_posix()
        files.append(
            File(uri, str(RESULTS.parent), config["site_dir"], config["use_directory_urls"])
        )
    return files
