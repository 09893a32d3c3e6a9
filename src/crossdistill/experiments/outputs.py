"""Run-directory outputs: per-epoch metrics CSV, the final table (CSV and Markdown), figures."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from statistics import mean, stdev

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..errors import CrossdistillError  # noqa: E402
from ..figures import save_figure  # noqa: E402
from ..files import write_if_changed  # noqa: E402

TABLE_COLUMNS = ("arm", "metric", "mean", "std", "n")
METRIC_LABELS = {
    "accuracy": "test accuracy",
    "cross_entropy": "test cross-entropy",
    "mse": "test MSE",
    "cross_entropy_jitter": "cross-entropy jitter",
    "mse_jitter": "MSE jitter",
    "teacher_accuracy": "f∘φ accuracy",
    "teacher_cross_entropy": "f∘φ cross-entropy",
    "teacher_mse": "f∘φ MSE",
    "lam": "λ",
    "temperature": "T",
    "latent_weight": "γ",
    "margin": "margin",
    "triplet_weight": "triplet weight",
    "probe_accuracy": "linear probe",
    "parameters": "student parameters",
    "teacher_parameters": "teacher parameters",
    "robust_loss": "robust loss L3^δ",
    "prediction_variance": "prediction variance",
    "training_seconds": "training seconds",
    "selection_seconds": "of which selection",
    "runs": "student runs",
    "unlabelled_rows": "unlabelled rows",
    "ece": "test ECE",
    "teacher_ece": "f∘φ ECE",
    "prior_precision": "τ",
}


SETTINGS = (
    "lam",
    "temperature",
    "latent_weight",
    "margin",
    "triplet_weight",
    "runs",
    "unlabelled_rows",
    "prior_precision",
)
"""Metrics that are chosen settings or counts, not measurements: printed as plain numbers."""


class RunDirectoryError(CrossdistillError, FileExistsError):
    """A run directory that holds a run of another config, or of other inputs."""


REUSABLE = ("units", "checkpoints", "cache")
"""What a run directory keeps for a rerun to reuse (beside its outputs)."""


def claim_directory(out: Path, config_text: str, inputs: dict[str, str]) -> None:
    """Make ``out`` the run directory of exactly this config and these inputs.

    ``out/config.yaml`` holds ``config_text`` and ``out/inputs.json`` the fingerprints of the
    data and files the run is made from (field → digest). A directory holding a run of a
    different config or of different inputs is refused, naming what differs; so is one
    holding reusable state (`REUSABLE`) with no record of its inputs. Files already right are
    not rewritten.

    Raises:
        RunDirectoryError: the directory holds another run.
    """
    saved, record = out / "config.yaml", out / "inputs.json"
    advice = "choose another --out or delete that directory"
    if saved.exists() and _read_bytes(saved, advice) != config_text.encode():
        raise RunDirectoryError(f"{out} holds a run of a different config ({saved}); {advice}")
    if record.exists():
        try:
            before = json.loads(_read_bytes(record, advice))
        except ValueError:  # not JSON, or not UTF-8
            before = None
        if not isinstance(before, dict):
            raise RunDirectoryError(
                f"{record} is not the record of a run's inputs (a JSON mapping); {advice}"
            )
        changed = [key for key in {**before, **inputs} if before.get(key) != inputs.get(key)]
        if changed:
            raise RunDirectoryError(
                f"{out} holds a run of the same config made from other inputs: "
                f"{', '.join(changed)} changed since; {advice}"
            )
    elif saved.exists() and any((out / name).exists() for name in REUSABLE):
        raise RunDirectoryError(
            f"{out} holds a run with no record of the data it was made from ({record}); {advice}"
        )
    write_if_changed(saved, config_text)
    write_if_changed(record, json.dumps(inputs, indent=1, sort_keys=True) + "\n")


def _read_bytes(path: Path, advice: str) -> bytes:
    """The bytes of a run directory's file; a `RunDirectoryError` naming it when unreadable."""
    try:
        return path.read_bytes()
    except OSError as error:
        raise RunDirectoryError(f"{path}: cannot read it ({error.strerror}); {advice}") from None


def write_csv(rows: Sequence[dict], path: Path) -> None:
    """Rows of dicts as CSV with the union of their keys as columns (first-seen order)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, columns)
    writer.writeheader()
    writer.writerows(rows)
    write_if_changed(path, text.getvalue())


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings."""
    with Path(path).open(newline="") as file:
        return list(csv.DictReader(file))


def summarize(values: dict[tuple[str, str], list[float]]) -> list[dict]:
    """Table rows ``arm, metric, mean, std, n`` from lists of per-seed values.

    ``std`` is the sample standard deviation (ddof = 1; 0 for a single value).
    """
    return [
        {
            "arm": arm,
            "metric": metric,
            "mean": mean(seeds),
            "std": stdev(seeds) if len(seeds) > 1 else 0.0,
            "n": len(seeds),
        }
        for (arm, metric), seeds in values.items()
    ]


def markdown_table(table: Sequence[dict], caption: str = "") -> str:
    """The table pivoted to one line per arm and one column per metric, as ``mean ± std``."""
    arms = list(dict.fromkeys(row["arm"] for row in table))
    metrics = list(dict.fromkeys(row["metric"] for row in table))
    cells = {(row["arm"], row["metric"]): row for row in table}
    header = ["arm", *(METRIC_LABELS.get(m, m) for m in metrics), "seeds"]
    lines = [caption, ""] if caption else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in arms:
        row = [arm]
        for metric in metrics:
            cell = cells.get((arm, metric))
            row.append("" if cell is None else _format(cell))
        seeds = max(int(c["n"]) for (a, _), c in cells.items() if a == arm)
        lines.append("| " + " | ".join([*row, str(seeds)]) + " |")
    return "\n".join(lines) + "\n"


def _format(cell: dict) -> str:
    value, spread = float(cell["mean"]), float(cell["std"])
    if cell["metric"].endswith("parameters"):
        return f"{value:,.0f}"
    if cell["metric"] in SETTINGS:
        return f"{value:g}" if spread == 0 else f"{value:.3g} ± {spread:.2g}"
    text = f"{value:.4f}"
    return text if int(cell["n"]) == 1 else f"{text} ± {spread:.4f}"


def plot_curves(rows: Sequence[dict], metric: str, path: Path, title: str = "") -> None:
    """``metric`` against epoch, one line per arm: the mean over seeds with a ±std band."""
    curves: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        curves[row["arm"]][int(row["epoch"])].append(float(row[metric]))
    figure, axes = plt.subplots(figsize=(6, 4))
    for arm, by_epoch in curves.items():
        epochs = sorted(by_epoch)
        means = [mean(by_epoch[e]) for e in epochs]
        spreads = [stdev(by_epoch[e]) if len(by_epoch[e]) > 1 else 0.0 for e in epochs]
        axes.plot(epochs, means, label=arm)
        axes.fill_between(
            epochs,
            [m - s for m, s in zip(means, spreads, strict=True)],
            [m + s for m, s in zip(means, spreads, strict=True)],
            alpha=0.2,
        )
    axes.set_xlabel("epoch")
    axes.set_ylabel(METRIC_LABELS.get(metric, metric))
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
