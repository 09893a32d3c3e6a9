"""`imagenet_style` end to end on a tiny synthetic Imagenette folder and random VGG-19 weights."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crossdistill.experiments import run_experiment
from crossdistill.experiments.config import load_config
from crossdistill.models.vgg import vgg19_features

WNIDS = [f"n0{i}000000" for i in range(10)]


def _write_imagenette(root: Path, train: int, val: int) -> None:
    """``root/imagenette2-160/{train,val}/<wnid>/*.JPEG``: noisy images tinted by class."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        for label, wnid in enumerate(WNIDS):
            folder = root / "imagenette2-160" / split / wnid
            folder.mkdir(parents=True)
            tint = np.array([25 * label, 255 - 25 * label, 128])
            for i in range(count):
                pixels = np.clip(tint + rng.normal(0, 40, (40, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG")


@pytest.mark.slow
def test_imagenet_style_runs_end_to_end_on_synthetic_data(tmp_path: Path) -> None:
    _write_imagenette(tmp_path, train=12, val=3)
    torch.manual_seed(0)
    weights = tmp_path / "vgg19.pth"
    torch.save(vgg19_features().state_dict(), weights)
    images = {"data_dir": str(tmp_path), "size": 32, "small": 40}
    overrides = [
        *(f"data.{key}={value}" for key, value in images.items()),
        *(f"teachers.teacher.transform.content.{key}={value}" for key, value in images.items()),
        f"teachers.teacher.transform.weights={weights}",
        "teachers.teacher.transform.style_size=32",
        "teachers.teacher.transform.images=16",
        "teachers.teacher.transform.epochs=1",
        "teachers.teacher.train.epochs=2",
        "student.train.epochs=2",
        "validation=10",
        "seeds=[0]",
        "arms.teacher.lam=[0.5,0.9]",
        "arms.teacher.temperature=2",
    ]
    config = load_config("imagenet_style", overrides)
    # one φ, shared by the YAML anchor
    assert config.arms["teacher"].mapping == config.teachers["teacher"].transform
    out = tmp_path / "run"
    table = run_experiment(config, out, progress=False)

    metrics = {(row["arm"], row["metric"]) for row in table}
    assert {("no_teacher", "accuracy"), ("teacher", "accuracy"), ("teacher", "lam")} <= metrics
    with (out / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 * 1 * 2  # arms × seeds × epochs
    assert (out / "figures" / "accuracy.png").is_file()
    assert (out / "figures" / "teacher" / "stylised.png").is_file()  # φ's own figure
    assert len(list((out / "cache").glob("*.pt"))) == 2  # teacher over φ(Small) and φ(Test), once
