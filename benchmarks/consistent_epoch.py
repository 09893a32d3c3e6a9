"""Consistent distillation with cached views against plain cached KD, one epoch side by side.

The 784-64-10 MLP of the Fashion-MNIST experiments on FashionMNIST-Small (1 000 images, batch
64, Adam lr 1e-3, λ = 0.5, T = 4) learns from a random 784-512-512-10 teacher: plain KD on its
cached outputs (`Distillation`), and consistent KD (`ConsistentDistillation`) on K = 1, 4, 16
seeded views (shifts of up to 2 pixels) whose teacher outputs are cached before timing. Each
variant trains in turn within a repeat; it prints the median milliseconds per epoch, the ratio
to plain KD, the one-off time of the K teacher passes and the memory the cached outputs take.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from crossdistill.data import Views
from crossdistill.methods import ConsistentDistillation, Distillation, consistent_columns
from crossdistill.registries import datasets, models
from crossdistill.training import TeacherCache, fit

COUNTS = (1, 4, 16)
TRAINING = {"batch_size": 64, "optimizer": {"name": "adam", "lr": 1e-3}}


def _student() -> torch.nn.Module:
    torch.manual_seed(0)
    return models.build({"name": "mlp", "hidden": [64]}, in_shape=(1, 28, 28), num_outputs=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run (default 5)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (default 5)")
    args = parser.parse_args()
    small = datasets.build({"name": "fashion_mnist", "small": 1000, "seed": 0}).small
    torch.manual_seed(1)
    spec = {"name": "mlp", "hidden": [512, 512]}
    teacher = models.build(spec, in_shape=(1, 28, 28), num_outputs=10).eval()
    cache = TeacherCache()
    plain = small.columns()
    plain["teacher/teacher"] = cache.outputs(teacher, None, small.x)
    views, passes = {}, {}
    for count in COUNTS:
        start = time.perf_counter()
        views[count] = consistent_columns(small, teacher, None, Views(count=count, shift=2))
        passes[count] = time.perf_counter() - start
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads, {args.epochs} epochs, "
        f"{args.repeats} repeats"
    )
    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        start = time.perf_counter()
        fit(
            Distillation(_student(), lam=0.5, temperature=4.0),
            plain,
            epochs=args.epochs,
            **TRAINING,
        )
        times.setdefault("plain", []).append(time.perf_counter() - start)
        for count in COUNTS:
            method = ConsistentDistillation(
                _student(), lam=0.5, temperature=4.0, views=count, shift=2
            )
            start = time.perf_counter()
            fit(method, views[count], epochs=args.epochs, **TRAINING)
            times.setdefault(f"K={count}", []).append(time.perf_counter() - start)
    per_epoch = {
        name: 1000 * statistics.median(found) / args.epochs for name, found in times.items()
    }
    print(
        f"\n{'variant':>8} {'ms/epoch':>9} {'vs plain KD':>12} {'teacher passes s':>17} "
        f"{'cached MB':>10}"
    )
    print(f"{'plain':>8} {per_epoch['plain']:>9.1f} {1.0:>12.2f} {'':>17} {'':>10}")
    for count in COUNTS:
        name = f"K={count}"
        stored = views[count]["views/teacher"]
        megabytes = stored.numel() * stored.element_size() / 2**20
        print(
            f"{name:>8} {per_epoch[name]:>9.1f} {per_epoch[name] / per_epoch['plain']:>12.2f} "
            f"{passes[count]:>17.3f} {megabytes:>10.2f}"
        )


if __name__ == "__main__":
    main()
