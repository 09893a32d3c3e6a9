"""Training time of the VAE translator φ (SPEC §1.3) per epoch, on the real data it learns from.

The translator reads FashionMNIST-Small (1 000 clothing images) paired by class with MNIST-Train
digits (``pairs`` digits per clothing image); one epoch is one pass over those pairs through the
project's training loop. Prints seconds per epoch and pairs per second (median of ``--repeats``
epochs after one untimed warm-up epoch) for each latent size asked for, and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from crossdistill.mappings.vae import TranslatorSettings, student_clothing, train_translator
from crossdistill.registries import datasets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("CROSSDISTILL_DATA"))
    parser.add_argument("--latent-dims", type=int, nargs="+", default=[2, 16])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    digits = datasets.build({"name": "mnist", "small": 1000}, data_dir=args.data_dir).train
    print("VAE translator training time (FashionMNIST-Small × MNIST-Train pairs)")
    print(
        f"machine: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, {platform.machine()}"
    )
    print(f"{'latent_dim':>10} {'pairs/epoch':>12} {'s/epoch':>9} {'pairs/s':>9}")
    for latent_dim in args.latent_dims:
        settings = TranslatorSettings(latent_dim=latent_dim, pairs=args.pairs, epochs=1)
        clothing = student_clothing(settings, args.data_dir)
        train_translator(settings, clothing, digits)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            train_translator(settings, clothing, digits)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        pairs = len(clothing) * args.pairs
        print(f"{latent_dim:>10} {pairs:>12} {seconds:>9.2f} {pairs / seconds:>9.0f}")


if __name__ == "__main__":
    main()
