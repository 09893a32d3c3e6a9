"""K students trained at once by `fit_many` against K separate `fit` runs, side by side.

Three students: the 784-64-10 MLP of the Fashion-MNIST experiments on FashionMNIST-Small
(1 000 images, batch 64, Adam lr 1e-3); the CNN student of `cifar_style` (16-32 channels, 64
hidden) on the CIFAR-10 subset's Small (1 000 images, batch 32, Adam lr 1e-3); and a
`gd_synthetic` linear student (50 → 2 softmax on 200 rows of `lopez_paz_synthetic`, batch 32,
RMSprop lr 1e-3). For K = 1, 4, 16 it prints the wall time of K separate runs, of one stacked
run of K, their ratio, with the target where there is one (16 stacked ≤ 0.40× of 16 separate
for the MLP, ≤ 0.6× for the CNN), time(K stacked) / time(1 stacked) and how `fit_many` stacked
them (`crossdistill.training.stacking`). Each variant is timed in turn within a repeat;
medians over ``--repeats``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from crossdistill.methods import Supervised
from crossdistill.registries import datasets, models, privileged_datasets
from crossdistill.training import fit, fit_many, stacking

COUNTS = (1, 4, 16)
TARGETS = {"FashionMNIST 784-64-10 MLP": 0.40, "cifar_style CNN 16-32-64": 0.6}
"""The largest stacked/separate ratio wanted at K = 16."""


def _students(spec: dict, in_shape: tuple, classes: int, count: int) -> list[Supervised]:
    made = []
    for seed in range(count):
        torch.manual_seed(seed)
        made.append(Supervised(models.build(spec, in_shape=in_shape, num_outputs=classes)))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (default 3)")
    args = parser.parse_args()
    fmnist = datasets.build({"name": "fashion_mnist", "small": 1000, "seed": 0}).small
    cifar = datasets.build(
        {
            "name": "cifar10",
            "small": 1000,
            "seed": 0,
            "folder": "cifar10-subset/cifar-10-batches-py",
        }
    ).small
    synthetic = privileged_datasets.build(
        {"name": "lopez_paz_synthetic", "setting": "clean_labels", "seed": 0}
    ).train.regular
    cases = {
        "FashionMNIST 784-64-10 MLP": (
            {"name": "mlp", "hidden": [64]},
            (1, 28, 28),
            10,
            fmnist,
            {"batch_size": 64, "optimizer": {"name": "adam", "lr": 1e-3}},
        ),
        "cifar_style CNN 16-32-64": (
            {"name": "cnn", "channels": [16, 32], "hidden": 64},
            (3, 32, 32),
            10,
            cifar,
            {"batch_size": 32, "optimizer": {"name": "adam", "lr": 1e-3}},
        ),
        "gd_synthetic linear 50-2": (
            {"name": "mlp", "hidden": []},
            tuple(synthetic.x.shape[1:]),
            2,
            synthetic,
            {"batch_size": 32, "optimizer": {"name": "rmsprop", "lr": 1e-3}},
        ),
    }
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads, {args.epochs} epochs"
    )
    for case, (spec, in_shape, classes, data, settings) in cases.items():
        settings = settings | {"epochs": args.epochs}
        times: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.repeats):
            for count in COUNTS:
                separate = _students(spec, in_shape, classes, count)
                start = time.perf_counter()
                for k, method in enumerate(separate):
                    fit(method, data, seed=k, **settings)
                times.setdefault(("separate", count), []).append(time.perf_counter() - start)
                stacked = _students(spec, in_shape, classes, count)
                start = time.perf_counter()
                fit_many(stacked, data, seeds=list(range(count)), **settings)
                times.setdefault(("stacked", count), []).append(time.perf_counter() - start)
        median = {key: statistics.median(found) for key, found in times.items()}
        how = stacking(_students(spec, in_shape, classes, 2))
        print(f"\n{case} ({len(data)} rows; stacked by {how})")
        print(
            f"{'K':>3} {'separate s':>11} {'stacked s':>10} {'stacked/separate':>17} "
            f"{'target':>7} {'stacked K / stacked 1':>22}"
        )
        for count in COUNTS:
            separate, stacked = median["separate", count], median["stacked", count]
            target = f"≤ {TARGETS[case]:.2f}" if count == 16 and case in TARGETS else ""
            print(
                f"{count:>3} {separate:>11.3f} {stacked:>10.3f} {stacked / separate:>17.2f} "
                f"{target:>7} {stacked / median['stacked', 1]:>22.2f}"
            )


if __name__ == "__main__":
    main()
