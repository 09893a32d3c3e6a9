"""Speed of the style-transfer mapping φ at the Imagenette resolution (160×160, SPEC §1.4), with
the real ImageNet VGG-16 weights (Caffe convention; content relu4_2, style relu1_1–relu5_1).

Three timed operations on seeded random images (their content does not change the time):

- Gatys optimisation: one Adam step of `stylize` on a batch of B images (a VGG forward and
  backward pass), per step; φ = ``style_transfer`` costs ``--gatys-steps`` (default 150) of them
  per image;
- feed-forward network: one training step of `train_transform_net` (through `fit`) on a batch
  of B images;
- feed-forward network: φ = ``fast_style_transfer``'s forward pass, batches of ``--batch-ff``.

Each figure is the median over ``--repeats`` timed runs after one untimed warm-up, printed as
seconds per call and images per second.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from crossdistill.losses import StyleLoss
from crossdistill.mappings import TransformNet, stylize, train_transform_net
from crossdistill.models import load_vgg_features
from crossdistill.models.vgg import KNOWN_WEIGHTS
from crossdistill.training import predict

SIZE = 160
"""Imagenette's resolution (SPEC §1.4)."""


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("CROSSDISTILL_DATA"),
        help="folder holding vgg16-imagenet/vgg16_features_caffe.npz (default $CROSSDISTILL_DATA)",
    )
    parser.add_argument("--batch", type=int, default=2, help="B for the Gatys and training steps")
    parser.add_argument("--batch-ff", type=int, default=16, help="batch of the forward pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gatys-steps", type=int, default=150, help="steps per image for φ")
    args = parser.parse_args()

    weights = (
        None
        if args.data_dir is None
        else Path(args.data_dir) / KNOWN_WEIGHTS["vgg16"].relative_path
    )
    extractor = load_vgg_features(weights, "vgg16", "caffe")
    generator = torch.Generator().manual_seed(0)
    content = torch.rand(args.batch, 3, SIZE, SIZE, generator=generator)
    loss = StyleLoss(extractor, torch.rand(1, 3, SIZE, SIZE, generator=generator))
    torch.manual_seed(0)
    network = TransformNet()
    many = torch.rand(args.batch_ff, 3, SIZE, SIZE, generator=generator)

    rows = [
        (
            f"Gatys step, batch {args.batch}",
            args.batch,
            median_seconds(lambda: stylize(content, loss, steps=1), args.repeats),
        ),
        (
            f"feed-forward training step, batch {args.batch}",
            args.batch,
            median_seconds(
                lambda: train_transform_net(
                    network, content, loss, epochs=1, batch_size=args.batch
                ),
                args.repeats,
            ),
        ),
        (
            f"feed-forward forward pass, batch {args.batch_ff}",
            args.batch_ff,
            median_seconds(lambda: predict(network, many, args.batch_ff), args.repeats),
        ),
    ]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
        f"images {SIZE}×{SIZE}; VGG-16 (Caffe) from {weights or 'the default path'}"
    )
    print(f"{'operation':<42} {'s/call':>8} {'images/s':>9}")
    for label, images, seconds in rows:
        print(f"{label:<42} {seconds:8.3f} {images / seconds:9.2f}")
    per_image = rows[0][2] / args.batch * args.gatys_steps
    forward = rows[2][2] / args.batch_ff
    print(
        f"φ per image: Gatys {args.gatys_steps} steps ≈ {per_image:.0f} s; "
        f"feed-forward ≈ {forward * 1000:.0f} ms ({per_image / forward:.0f}× faster)"
    )


if __name__ == "__main__":
    main()
