"""Privileged data made with a mapping: a dataset's inputs as x*, φ of them as the regular x.

The builder registers itself in `crossdistill.data.privileged_datasets` as ``regular_view``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.arrays import ArrayData
from ..data.datasets import DatasetSetting
from ..data.privileged import PrivilegedData, PrivilegedSplits
from ..registries import datasets, mappings, privileged_datasets
from .base import MappingSetting


@privileged_datasets.register("regular_view")
def regular_view(
    *,
    dataset: DatasetSetting,
    view: MappingSetting,
    train: int,
    seed: int = 0,
    data_dir: str | Path | None = None,
) -> PrivilegedSplits:
    """A dataset's inputs as privileged information and a mapping of them as the regular inputs.

    Training rows are the dataset's Small of ``train`` rows drawn with ``seed``; Test is its
    Test. x* is the dataset's x; x = ``view``(x*), a registered mapping applied once (e.g.
    ``{"name": "resize", "size": 7, "antialias": true}``: 28×28 digits seen at 7×7). The
    classes are those the dataset declares.
    """
    spec = {"name": dataset} if isinstance(dataset, str) else dict(dataset)
    if data_dir is not None:
        spec["data_dir"] = data_dir
    splits = datasets.build({**spec, "small": train, "seed": seed})
    phi = mappings.build(view)

    def both(data: ArrayData) -> PrivilegedData:
        with torch.no_grad():
            return PrivilegedData(phi(data.x), data.x, data.y)

    return PrivilegedSplits(
        train=both(splits.small), test=both(splits.test), num_classes=splits.num_classes
    )
