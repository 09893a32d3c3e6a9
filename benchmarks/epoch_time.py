"""Epoch time of the training loop: distillation with cached teacher outputs, distillation with
the teacher run on every batch, and `fit` against a bare hand-written PyTorch loop.

Every variant trains a freshly initialised student (same seed, same weights): ``--student mlp``
(default), the 784-64-10 MLP on FashionMNIST-Small; ``--student cnn``, the CNN student of
``cifar_style`` (16-32 channels, 64 hidden) on the CIFAR-10 subset's Small; 1 000 images, batch
64, Adam lr 1e-3. With ``--stack K`` the CE and cached-KD variants train K students at once
(`fit_many`), so that the soft term's cost is shared. The variants are timed in turn within each
repeat and the medians over repeats are printed. ``benchmarks/README.md`` explains each number;
``python benchmarks/epoch_time.py --help`` lists the options.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossdistill.data.arrays import ArrayData
from crossdistill.methods import Distillation, Method, Supervised, teacher_column
from crossdistill.registries import datasets, mappings, models
from crossdistill.training import TeacherCache, fit, fit_many

SEED = 0
SMALL = 1000
BATCH_SIZE = 64
LR = 1e-3
NUM_CLASSES = 10
SETUPS = {
    "mlp": {
        "data": {"name": "fashion_mnist"},
        "label": "FashionMNIST-Small",
        "student": {"name": "mlp", "hidden": [64]},
        "teacher": {"name": "mlp", "hidden": [512, 512]},
        "models": "student 784-64-10 MLP; teacher 784-512-512-10 MLP",
    },
    "cnn": {
        "data": {"name": "cifar10", "folder": "cifar10-subset/cifar-10-batches-py"},
        "label": "CIFAR-10 subset Small",
        "student": {"name": "cnn", "channels": [16, 32], "hidden": 64},
        "teacher": {"name": "cnn", "channels": [32, 64, 128], "hidden": 256},
        "models": "student cifar_style's CNN 16-32-64; teacher CNN 32-64-128-256",
    },
}
"""The students (and random-init teachers) a run can time, by ``--student``."""
LAM, TEMPERATURE = 0.5, 4.0

BARE = "bare PyTorch loop, CE"
CE = "fit, CE (lam=1, no teacher)"
KD_CACHED = "fit, KD, cached teacher outputs"
KD_ONLINE = "fit, KD, teacher run every batch"
RATIOS = (
    ("(a) KD cached / CE", KD_CACHED, CE, 1.05),
    ("(b) KD every batch / CE", KD_ONLINE, CE, None),
    ("(c) fit CE / bare loop", CE, BARE, 1.10),
)
"""Printed ratios: name, numerator, denominator, target (None: shown for contrast only)."""

Variant = Callable[[nn.Module, int], None]
"""Trains a fresh student in place for the given number of epochs."""


class OnlineDistillation(Distillation):
    """`Distillation` with the teacher run, without gradients, on φ of every batch: the
    per-batch way of distilling, for contrast. The teacher and φ are kept in a tuple, so they
    are neither trained nor saved with the method."""

    def __init__(
        self, student: nn.Module, teacher: nn.Module, mapping: nn.Module, **settings: float
    ) -> None:
        super().__init__(student, **settings)
        self.columns = ("x", "y")
        self.frozen = (teacher.eval(), mapping)

    def forward_train(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        teacher, mapping = self.frozen
        with torch.no_grad():
            outputs = teacher(mapping(batch["x"]))
        return super().forward_train({**batch, teacher_column(self.teacher): outputs})


def bare_loop(model: nn.Module, data: ArrayData, epochs: int) -> None:
    """Plain cross-entropy training with nothing but randperm slices and Adam steps."""
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    order = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(data), generator=order).split(BATCH_SIZE):
            loss = F.cross_entropy(model(data.x[index]), data.y[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def variants(
    data: ArrayData,
    teacher: nn.Module,
    mapping: nn.Module,
    teacher_outputs: Tensor,
    make: Callable[[], nn.Module],
    stack: int,
) -> dict[str, Variant]:
    """The trainings timed, by label, in the order they run within a repeat: all four, or with
    ``stack`` > 1 CE and cached KD, each training ``stack`` students from ``make`` at once."""
    kd = {"lam": LAM, "temperature": TEMPERATURE}
    cached = data.columns(**{teacher_column("teacher"): teacher_outputs})
    if stack > 1:

        def many(wrap: Callable[[nn.Module], Method], columns: dict) -> Variant:
            def run(model: nn.Module, epochs: int) -> None:
                methods = [wrap(model)] + [wrap(make()) for _ in range(stack - 1)]
                fit_many(
                    methods,
                    columns,
                    seeds=list(range(stack)),
                    epochs=epochs,
                    batch_size=BATCH_SIZE,
                    optimizer={"name": "adam", "lr": LR},
                )

            return run

        return {
            CE: many(Supervised, data.columns()),
            KD_CACHED: many(lambda model: Distillation(model, **kd), cached),
        }

    def train(method: Method, columns: dict[str, Tensor], epochs: int) -> None:
        fit(
            method,
            columns,
            epochs=epochs,
            batch_size=BATCH_SIZE,
            optimizer={"name": "adam", "lr": LR},
            seed=SEED,
        )

    return {
        BARE: lambda model, epochs: bare_loop(model, data, epochs),
        CE: lambda model, epochs: train(Supervised(model), data.columns(), epochs),
        KD_CACHED: lambda model, epochs: train(Distillation(model, **kd), cached, epochs),
        KD_ONLINE: lambda model, epochs: train(
            OnlineDistillation(model, teacher, mapping, **kd), data.columns(), epochs
        ),
    }


def builder(spec: dict, in_shape: tuple[int, ...]) -> Callable[[], nn.Module]:
    """A function that builds a freshly initialised ``spec``, identical at every call."""

    def student() -> nn.Module:
        torch.manual_seed(SEED)
        return models.build(spec, in_shape=in_shape, num_outputs=NUM_CLASSES)

    return student


def seconds(run: Callable[..., object], *args: object) -> float:
    """Wall-clock seconds ``run(*args)`` takes."""
    start = time.perf_counter()
    run(*args)
    return time.perf_counter() - start


def measure(
    named: dict[str, Variant], student: Callable[[], nn.Module], repeats: int, epochs: int
) -> dict[str, list[float]]:
    """Seconds per epoch of each variant in each repeat, the variants run round-robin.

    Each repeat starts one variant later than the previous one, so that no variant always runs
    first (right after a pause) or last.
    """
    labels = list(named)
    times: dict[str, list[float]] = {label: [] for label in labels}
    for repeat in range(repeats):
        for k in range(len(labels)):
            label = labels[(repeat + k) % len(labels)]
            times[label].append(seconds(named[label], student(), epochs) / epochs)
    return times


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Whether two models hold exactly equal parameters."""
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def report(
    times: dict[str, list[float]],
    fills: list[float],
    data: ArrayData,
    epochs: int,
    setup: dict,
    stack: int,
) -> None:
    """Print the setting, the median ms/epoch of each variant and the ratios against targets.

    A ratio is the median over repeats of the ratio within each repeat (the two variants ran
    back to back), with its smallest and largest value.
    """
    repeats = len(fills)
    print("crossdistill epoch-time benchmark")
    print(
        f"machine: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}"
    )
    print(
        f"data:    {setup['label']}, {len(data)} images, batch {BATCH_SIZE} "
        f"({-(-len(data) // BATCH_SIZE)} steps/epoch), Adam lr {LR:g}"
    )
    print(
        f"models:  {setup['models']} (random init); KD lam={LAM:g}, T={TEMPERATURE:g}"
        + (f"; {stack} students per run, stacked (fit_many)" if stack > 1 else "")
    )
    print(
        f"timing:  median of {repeats} repeats x {epochs} epochs, variants interleaved round-robin"
    )
    print()
    print(f"{'variant':<40}{'ms/epoch':>10}")
    for label, values in times.items():
        print(f"{label:<40}{1000 * statistics.median(values):>10.2f}")
    fill = f"{1000 * statistics.median(fills):.2f} ms"
    print(f"{'teacher cache fill (once per run)':<40}{fill:>13}")
    print()
    print(f"{'ratio':<28}{'median':>8}{'min':>8}{'max':>8}  target")
    for name, numerator, denominator, target in RATIOS:
        if numerator not in times or denominator not in times:
            continue
        paired = [a / b for a, b in zip(times[numerator], times[denominator], strict=True)]
        median = statistics.median(paired)
        verdict = "(contrast)"
        if target is not None:
            verdict = f"<= {target:.2f} {'ok' if median <= target else 'MISS'}"
        print(f"{name:<28}{median:>8.3f}{min(paired):>8.3f}{max(paired):>8.3f}  {verdict}")


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run the benchmark and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder holding fashion-mnist/ (default: $CROSSDISTILL_DATA, then the cache)",
    )
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats (default 15)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per repeat (default 20)")
    parser.add_argument("--student", choices=sorted(SETUPS), default="mlp", help="default mlp")
    parser.add_argument(
        "--stack", type=int, default=1, help="students per run, trained at once (default 1)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.epochs < 1 or args.stack < 1:
        parser.error("--repeats, --epochs and --stack must be at least 1")

    setup = SETUPS[args.student]
    spec = setup["data"] | {"small": SMALL, "seed": SEED}
    if args.data_dir is not None:
        spec["data_dir"] = args.data_dir
    data = datasets.build(spec).small
    in_shape = tuple(data.x.shape[1:])
    torch.manual_seed(SEED)
    teacher = models.build(setup["teacher"], in_shape=in_shape, num_outputs=NUM_CLASSES).eval()
    mapping = mappings.build("identity")
    student = builder(setup["student"], in_shape)

    fills = [seconds(TeacherCache().outputs, teacher, mapping, data.x) for _ in range(args.repeats)]
    outputs = TeacherCache().outputs(teacher, mapping, data.x)
    named = variants(data, teacher, mapping, outputs, student, args.stack)

    # Warm-up, one untimed epoch each; it also checks that fit and the bare loop do the same work.
    warm = {label: student() for label in named}
    for label, model in warm.items():
        named[label](model, 1)
    times = measure(named, student, args.repeats, args.epochs)

    report(times, fills, data, args.epochs, setup, args.stack)
    if BARE in warm:
        same = same_weights(warm[BARE], warm[CE])
        print()
        print(f"fit CE and the bare loop end with identical weights: {same}")


if __name__ == "__main__":
    main()
