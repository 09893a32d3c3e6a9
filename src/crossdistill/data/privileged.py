"""Data with privileged information (Lopez-Paz et al., 2016): each training row has regular inputs
x, which the student sees at training and test time, and privileged inputs x* that only the teacher
sees."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..registries import privileged_datasets
from .arrays import ArrayData
from .checks import check_alike, check_labels, check_num_classes


@dataclass(frozen=True)
class PrivilegedData:
    """Row-aligned regular inputs, privileged inputs and labels.

    Attributes:
        x: regular inputs ``(N, ...)`` float32 (what the student sees).
        x_star: privileged inputs ``(N, ...)`` float32 (what the teacher sees).
        y: class indices ``(N,)`` int64.
    """

    x: Tensor
    x_star: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if not self.x.shape[0] == self.x_star.shape[0] == self.y.shape[0]:
            raise ValueError(
                f"x, x_star and y differ in length: {self.x.shape[0]}, {self.x_star.shape[0]} "
                f"and {self.y.shape[0]} rows"
            )

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, index: Tensor) -> PrivilegedData:
        """The rows ``index`` (a ``(M,)`` int64 tensor)."""
        return PrivilegedData(self.x[index], self.x_star[index], self.y[index])

    @property
    def regular(self) -> ArrayData:
        """``(x, y)``: the student's view."""
        return ArrayData(self.x, self.y)

    @property
    def privileged(self) -> ArrayData:
        """``(x_star, y)``: the teacher's view."""
        return ArrayData(self.x_star, self.y)


@dataclass(frozen=True)
class PrivilegedSplits:
    """Training rows (privileged inputs known) and Test rows (scored on regular inputs).

    Attributes:
        train: the training rows.
        test: the held-out rows.
        num_classes: the classes, as the builder declares them; None when it declares none (a
            caller then infers max label + 1 over both parts).

    Raises:
        DataFormatError: Train and Test differ in the dtype or row shape of x, of x_star or of
            y; or ``num_classes`` is given and a label is not an integer in
            ``[0, num_classes)``. The message names the part, what was expected and what was
            found.
        ValueError: ``num_classes`` is neither None nor a positive integer.
    """

    train: PrivilegedData
    test: PrivilegedData
    num_classes: int | None = None

    def __post_init__(self) -> None:
        parts = {"Train": self.train, "Test": self.test}
        check_alike("regular inputs x", {name: part.x for name, part in parts.items()})
        check_alike("privileged inputs x_star", {name: part.x_star for name, part in parts.items()})
        check_alike("labels", {name: part.y for name, part in parts.items()})
        check_num_classes(self.num_classes, "PrivilegedSplits")
        if self.num_classes is not None:
            for name, part in parts.items():
                check_labels(part.y, self.num_classes, name, "the problem")


SYNTHETIC_SETTINGS = (
    "clean_labels",
    "clean_features",
    "relevant_features",
    "sample_relevant_features",
)
"""Lopez-Paz et al.'s four synthetic kinds of privileged information (their §5, items 1–4)."""


def _standardize(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    """Both scaled column-wise with Train's mean and standard deviation."""
    centre, scale = train.mean(0), train.std(0).clamp_min(1e-12)
    return (train - centre) / scale, (test - centre) / scale


@privileged_datasets.register("lopez_paz_synthetic")
def lopez_paz_synthetic(
    *,
    setting: str,
    seed: int = 0,
    features: int = 50,
    train: int = 200,
    test: int = 1000,
    relevant: int = 3,
) -> PrivilegedSplits:
    """One repetition of Lopez-Paz et al.'s synthetic experiments (d = 50, 200 + 1 000 rows).

    With x ~ N(0, I_d) ``(n, features)`` and a direction α ~ N(0, I_d) drawn per ``seed``:

    - ``clean_labels``: x* = ⟨α, x⟩ ``(n, 1)``, y = 1[x* + ε > 0], ε ~ N(0, 1);
    - ``clean_features``: x* ~ N(0, I_d), x = x* + ε with ε ~ N(0, I_d), y = 1[⟨α, x*⟩ > 0];
    - ``relevant_features``: x* = x_J ``(n, relevant)`` for one random index set J shared by all
      rows, y = 1[⟨α', x*⟩ > 0] with α' = α's first ``relevant`` entries;
    - ``sample_relevant_features``: x* = x_{J_i} ``(n, relevant)`` with a random J_i per row,
      y = 1[⟨α', x*⟩ > 0]: the rule is fixed in x*'s coordinates (the pixels inside a bounding
      box, in the box's frame), as in the authors' code, so the teacher can learn it while the
      student, on x, cannot tell which features matter.

    x and x* are standardised with Train's statistics (as the authors' code does); y ∈ {0, 1}
    (2 classes).
    """
    if setting not in SYNTHETIC_SETTINGS:
        raise ValueError(f"setting must be one of {', '.join(SYNTHETIC_SETTINGS)}, got {setting!r}")
    if not 0 < relevant <= features:
        raise ValueError(f"relevant must lie in 1..{features}, got {relevant}")
    g = torch.Generator().manual_seed(seed)
    alpha = torch.randn(features, generator=g)
    shared = torch.randperm(features, generator=g)[:relevant]
    n = train + test
    x = torch.randn(n, features, generator=g)
    if setting == "clean_labels":
        x_star = (x @ alpha)[:, None]
        y = x_star[:, 0] + torch.randn(n, generator=g) > 0
    elif setting == "clean_features":
        x_star, x = x, x + torch.randn(n, features, generator=g)
        y = x_star @ alpha > 0
    else:
        if setting == "relevant_features":
            index = shared.expand(n, relevant)
        else:
            index = torch.rand(n, features, generator=g).argsort(dim=1)[:, :relevant]
        x_star = x.gather(1, index)
        y = x_star @ alpha[:relevant] > 0
    x_train, x_test = _standardize(x[:train], x[train:])
    star_train, star_test = _standardize(x_star[:train], x_star[train:])
    y = y.long()
    return PrivilegedSplits(
        train=PrivilegedData(x_train, star_train, y[:train]),
        test=PrivilegedData(x_test, star_test, y[train:]),
        num_classes=2,
    )
