"""A 30-run distillation sweep end to end: the crossdistill CLI and Python API against the
straightforward workflow, side by side.

The sweep: a given teacher (784-512-512-10 MLP), a 784-64-10 student on FashionMNIST-Small
(1 000 images, batch 64, Adam lr 1e-3, ``--epochs`` epochs), Hinton's KD at λ ∈ {0.1, 0.5, 0.9}
× T ∈ {1, 4} × 5 seeds, Test (10 000 images) scored after every epoch. Three ways run it:

- ``straightforward``: what one writes in plain PyTorch, written below (`STRAIGHTFORWARD`): each
  setting and seed in its own Python process (a shell loop), the teacher run on every batch
  under ``no_grad``, Test scored after every epoch;
- ``cli``: ``crossdistill run`` of one config with six fixed arms (one per setting) and five
  seeds, in a fresh run directory: everything the command does (start-up, data, the teacher's
  outputs, training with Test scored riding the stacks, checkpoints, tables and figures);
- ``api``: the training alone through the Python API, one `fit_many` call of the 30
  `Distillation` methods on the cached teacher outputs (made before the clock starts), without
  Test scores;
- ``api_scored``: the same call with ``score=Test``: the API doing the CLI's work.

Each round times the four in turn, starting one later each round. The ratios straightforward /
cli (target ≥ 10), cli / api (target ≤ 1.3) and cli / api_scored are taken within a round; the
script prints their minimum, median and maximum over the rounds.

    python benchmarks/sweep.py [--rounds N] [--epochs E]

It needs ``fashion-mnist/`` under ``$CROSSDISTILL_DATA``. The teacher is randomly initialised
(its weights do not change the timing) and saved as a state dict the config reads.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch
import yaml

from crossdistill.methods import Distillation
from crossdistill.registries import datasets, models
from crossdistill.training import TeacherCache, fit_many

SETTINGS = [(lam, temperature) for lam in (0.1, 0.5, 0.9) for temperature in (1.0, 4.0)]
SEEDS = [0, 1, 2, 3, 4]
TEACHER = {"name": "mlp", "hidden": [512, 512]}
STUDENT = {"name": "mlp", "hidden": [64]}

STRAIGHTFORWARD = textwrap.dedent(
    """
    import sys

    import torch
    import torch.nn.functional as F
    from torch import nn

    data, teacher_file, lam, temperature, seed, epochs = sys.argv[1:]
    lam, temperature, seed, epochs = float(lam), float(temperature), int(seed), int(epochs)
    x, y, x_test, y_test = torch.load(data, weights_only=True)
    teacher = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 10),
    )
    teacher.load_state_dict(torch.load(teacher_file, weights_only=True))
    teacher.eval()
    torch.manual_seed(seed)
    student = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        student.train()
        for index in torch.randperm(len(x), generator=order).split(64):
            inputs, labels = x[index], y[index]
            with torch.no_grad():
                soft = F.softmax(teacher(inputs) / temperature, dim=1)
            logits = student(inputs)
            hard = F.cross_entropy(logits, labels)
            kd = F.cross_entropy(logits / temperature, soft) * temperature**2
            loss = lam * hard + (1 - lam) * kd
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        student.eval()
        with torch.no_grad():
            logits = torch.cat([student(part) for part in x_test.split(2048)])
            accuracy = (logits.argmax(1) == y_test).float().mean().item()
    print(accuracy)
    """
)


def config(teacher_file: Path, epochs: int) -> dict:
    """The CLI's config: one arm per setting, five seeds."""
    return {
        "name": "sweep_benchmark",
        "description": "The 30-run sweep of benchmarks/sweep.py.",
        "task": "classification",
        "data": {"name": "fashion_mnist", "small": 1000, "seed": 0},
        "teachers": {"teacher": {"model": TEACHER, "checkpoint": str(teacher_file)}},
        "student": {
            "model": STUDENT,
            "train": {
                "epochs": epochs,
                "batch_size": 64,
                "optimizer": {"name": "adam", "lr": 1e-3},
            },
        },
        "seeds": SEEDS,
        "arms": {f"lam{lam:g}_T{t:g}": {"lam": lam, "temperature": t} for lam, t in SETTINGS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--epochs", type=int, default=60, help="epochs per run (default 60)")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads, {args.epochs} epochs, "
        f"{len(SETTINGS) * len(SEEDS)} runs"
    )
    splits = datasets.build({"name": "fashion_mnist", "small": 1000, "seed": 0})
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        torch.manual_seed(0)
        teacher = models.build(TEACHER, in_shape=(1, 28, 28), num_outputs=10).eval()
        torch.save(teacher.state_dict(), folder / "teacher.pt")
        data = (splits.small.x, splits.small.y, splits.test.x, splits.test.y)
        torch.save(data, folder / "data.pt")
        (folder / "straightforward.py").write_text(STRAIGHTFORWARD)
        (folder / "sweep.yaml").write_text(
            yaml.safe_dump(config(folder / "teacher.pt", args.epochs))
        )
        outputs = TeacherCache().outputs(teacher, None, splits.small.x)
        columns = splits.small.columns(**{"teacher/teacher": outputs})

        def straightforward(round_: int) -> None:
            for lam, temperature in SETTINGS:
                for seed in SEEDS:
                    run = [folder / "straightforward.py", folder / "data.pt", folder / "teacher.pt"]
                    run += [lam, temperature, seed, args.epochs]
                    subprocess.run(
                        [sys.executable, *map(str, run)], check=True, capture_output=True
                    )

        def cli(round_: int) -> None:
            out = folder / f"cli{round_}"
            command = [sys.executable, "-m", "crossdistill", "run", str(folder / "sweep.yaml")]
            subprocess.run(
                [*command, "--out", str(out), "--quiet"], check=True, capture_output=True
            )

        def api(round_: int, score=None) -> None:
            methods = []
            for lam, temperature in SETTINGS:
                for seed in SEEDS:
                    torch.manual_seed(seed)
                    student = models.build(STUDENT, in_shape=(1, 28, 28), num_outputs=10)
                    methods.append(Distillation(student, lam=lam, temperature=temperature))
            seeds = [seed for _ in SETTINGS for seed in SEEDS]
            fit_many(methods, columns, seeds=seeds, score=score, epochs=args.epochs, batch_size=64)

        def api_scored(round_: int) -> None:
            api(round_, score=splits.test)

        ways = {
            "straightforward": straightforward,
            "cli": cli,
            "api": api,
            "api_scored": api_scored,
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        for round_ in range(args.rounds):
            names = list(ways)
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                start = time.perf_counter()
                ways[name](round_)
                times[name].append(time.perf_counter() - start)
            print(f"round {round_ + 1}: " + ", ".join(f"{n} {times[n][-1]:.1f} s" for n in ways))
    ratios = {
        "straightforward / cli (target ≥ 10)": [
            a / b for a, b in zip(times["straightforward"], times["cli"], strict=True)
        ],
        "cli / api training (target ≤ 1.3)": [
            a / b for a, b in zip(times["cli"], times["api"], strict=True)
        ],
        "cli / api_scored": [a / b for a, b in zip(times["cli"], times["api_scored"], strict=True)],
    }
    print(f"\n{'':38} {'min':>6} {'median':>7} {'max':>6}")
    for name, found in times.items():
        row = (min(found), statistics.median(found), max(found))
        print(f"{name + ' s':38} {row[0]:6.1f} {row[1]:7.1f} {row[2]:6.1f}")
    for name, found in ratios.items():
        row = (min(found), statistics.median(found), max(found))
        print(f"{name:38} {row[0]:6.2f} {row[1]:7.2f} {row[2]:6.2f}")


if __name__ == "__main__":
    main()
