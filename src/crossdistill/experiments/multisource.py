"""The multi-source accuracy study of the GDDA-SVM (Ao, 2016, "Distilling"): with several
sources and several imitation weights, how close are the weights λ̂ that the classifier learns
from its leave-one-out loss to the weights λ* that are best on Test?

The data are Gaussian classes whose posterior p*(y|x) is known in closed form, so every source's
reliability is set by construction: teacher j's soft labels are ``r_j p*(·|x) + (1 − r_j) ν``
with ν a random Dirichlet vector per row, and each labelled row's label is replaced by a
uniformly random class with probability ρ.

λ* is exact. Every row is labelled, so the LS-SVM's row weights ``ω_i = Σ_j λ_j = 1`` do not
depend on λ: its hat matrix is fixed and the fitted decision values are linear in the targets
``Σ_j λ_j s_ij``, hence in λ. On Test, ``D(λ) = Σ_k λ_k D(e_k)`` (T, N), with ``D(e_k)`` the
decision values of the fit on source k alone, and the Test cross-entropy of ``softmax(D(λ))``
is convex in λ: `best_weights` minimises it over the simplex by projected gradient.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

import matplotlib.pyplot as plt
import numpy as np
from scipy.special import log_softmax, softmax

from ..figures import save_figure
from ..methods import GDDAClassifier
from ..methods.gdda import project_simplex
from ..registries import kinds
from .driver import ExperimentKind, Rows
from .outputs import markdown_table, summarize

WEIGHT_METRICS = (
    "distance",
    "distance_grid",
    "same_source",
    "star_at_vertex",
    "lambda_0",
    "lambda_0_star",
    "lambda_1",
    "lambda_1_star",
)
"""Per seed, number of teachers M and labelled rows per class n: ‖λ̂ − λ*‖₁ (and ‖λ_grid − λ*‖₁),
whether λ̂ and λ* put their largest weight on the same source, whether λ* is a vertex of the
simplex (largest weight ≥ `VERTEX`), and the weights of the true labels (λ₀) and of teacher 1
(λ₁, reliability ``reliability[0]``) in λ̂ and λ*."""

TEST_METRICS = (
    "accuracy",
    "accuracy_star",
    "accuracy_labels",
    "bayes_accuracy",
    "cross_entropy",
    "cross_entropy_star",
    "cross_entropy_labels",
    "excess_cross_entropy",
    "loo_loss",
    "loo_loss_grid",
    "seconds",
    "seconds_grid",
)
"""Test accuracy and cross-entropy at λ̂ (no suffix), at λ* (``_star``) and with the labels alone
(``_labels``: λ = e₀), the Bayes classifier's accuracy, ``CE(λ̂) − CE(λ*)``, the LOO loss at λ̂ and
at the grid's choice, and the fit times of the gradient search and of the grid."""

VERTEX = 0.99
"""λ* counts as a vertex of the simplex when its largest weight is at least this."""


@dataclass(frozen=True)
class GaussianClasses:
    """Classes ``x ~ N(μ_y, I)`` with equal priors; ``means`` (N, d)."""

    means: np.ndarray

    @classmethod
    def draw(
        cls, n_classes: int, dimensions: int, separation: float, rng: np.random.Generator
    ) -> GaussianClasses:
        """Means drawn from ``N(0, separation² I)``, (N, d)."""
        return cls(rng.normal(0.0, separation, (n_classes, dimensions)))

    def sample(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One row ``x ~ N(μ_y, I)`` per label of ``labels`` (L,), (L, d)."""
        return self.means[labels] + rng.standard_normal((len(labels), self.means.shape[1]))

    def posterior(self, x: np.ndarray) -> np.ndarray:
        """The true posterior ``p*(y|x) = softmax_y(μ_yᵀx − ½‖μ_y‖²)`` of rows ``x`` (L, d),
        (L, N)."""
        return softmax(x @ self.means.T - 0.5 * (self.means**2).sum(1), axis=1)


def noisy_labels(
    labels: np.ndarray, rate: float, n_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """``labels`` (L,) with each replaced, with probability ``rate``, by a uniformly random one
    of ``n_classes`` (possibly itself: a label changes with probability rate·(N − 1)/N)."""
    replaced = rng.random(len(labels)) < rate
    return np.where(replaced, rng.integers(0, n_classes, len(labels)), labels)


def reliabilities(first: float, last: float, teachers: int) -> np.ndarray:
    """``teachers`` reliabilities evenly spaced from ``first`` to ``last`` (one teacher:
    ``first``), (M,)."""
    return np.linspace(first, last, teachers) if teachers > 1 else np.array([first])


def teacher_soft_labels(
    posterior: np.ndarray,
    reliability: np.ndarray,
    concentration: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Soft labels ``r_j p*(·|x_i) + (1 − r_j) ν_ij`` of M teachers (L, M, N) from the true
    posterior (L, N) and the reliabilities r (M,); ν_ij ~ Dirichlet(``concentration``) afresh
    per row and teacher."""
    n_rows, n_classes = posterior.shape
    noise = rng.dirichlet(np.full(n_classes, concentration), size=(n_rows, len(reliability)))
    r = reliability[None, :, None]
    return r * posterior[:, None, :] + (1.0 - r) * noise


def cross_entropy(decisions: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of ``softmax(decisions)`` (T, N) against class indices ``labels``
    (T,), in nats."""
    return float(-np.mean(log_softmax(decisions, axis=1)[np.arange(len(labels)), labels]))


def best_weights(
    decisions: np.ndarray, labels: np.ndarray, tol: float = 1e-12, max_iter: int = 100_000
) -> np.ndarray:
    """λ* (K,) on the simplex minimising the cross-entropy of ``softmax(Σ_k λ_k D_k)`` against
    ``labels`` (T,), from the decision values ``decisions`` (K, T, N) of K sources alone; by
    projected gradient with backtracking (the loss is convex in λ), from the best vertex, until
    a step moves λ by less than ``tol`` (L1)."""
    rows = np.arange(len(labels))

    def value_and_grad(lam: np.ndarray) -> tuple[float, np.ndarray]:
        log_p = log_softmax(np.tensordot(lam, decisions, 1), axis=1)
        residual = np.exp(log_p)
        residual[rows, labels] -= 1.0  # ∂CE/∂D, times T
        return -log_p[rows, labels].mean(), np.einsum("tn,ktn->k", residual, decisions) / len(rows)

    vertices = np.eye(len(decisions))
    lam = min(vertices, key=lambda v: value_and_grad(v)[0])
    value, grad = value_and_grad(lam)
    step = 1.0
    for _ in range(max_iter):
        while True:  # Armijo backtracking on the projected step
            new = project_simplex(lam - step * grad)
            new_value, new_grad = value_and_grad(new)
            if new_value <= value - 1e-4 * np.dot(grad, lam - new) or step < 1e-16:
                break
            step /= 2
        moved = np.abs(new - lam).sum()
        if new_value > value:
            break
        lam, value, grad, step = new, new_value, new_grad, step * 2
        if moved < tol:
            break
    return lam


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """The generator of one random stream of a seed: ``(0,)`` the class means, ``(1,)`` Test,
    ``(2, n)`` the labelled rows with n per class and their labels, ``(3, n, M)`` M teachers'
    noise on them."""
    return np.random.default_rng([seed, *stream])


def _weights(lam: np.ndarray) -> str:
    return " ".join(f"{w:.4f}" for w in lam)


@kinds.register("gdda_multisource")
class GDDAMultiSourceKind(ExperimentKind):
    """A `GDDAMultiSourceConfig`: one unit per seed, each fitting every (M, n).

    The directory holds ``config.yaml``, ``results.csv`` (per seed, M and n: the `WEIGHT_METRICS`,
    the `TEST_METRICS`, and λ̂, λ* and the grid's λ), ``table.csv`` / ``table.md`` (mean ± std
    over seeds, one row per (M, n)), ``figures/distance.png`` and ``units/``.
    """

    outputs = ("results",)

    def units(self) -> list[str]:
        return [f"seed_{seed}" for seed in self.config.seeds]  # units/seed_<s>.json

    def run_unit(self, unit: str) -> Rows:
        """One seed: the class means and Test, then per n the labelled rows, per M the
        teachers, and the fits."""
        config = self.config
        seed = int(unit.removeprefix("seed_"))
        classes = GaussianClasses.draw(
            config.classes, config.dimensions, config.separation, _rng(seed, 0)
        )
        y_test = np.arange(config.test_rows) % config.classes
        x_test = classes.sample(y_test, _rng(seed, 1))
        bayes = float(np.mean(classes.posterior(x_test).argmax(1) == y_test))
        rows = []
        for n in config.labelled_per_class:
            rng = _rng(seed, 2, n)
            y = np.repeat(np.arange(config.classes), n)
            x = classes.sample(y, rng)
            y_noisy = noisy_labels(y, config.label_noise, config.classes, rng)
            posterior = classes.posterior(x)
            for m in config.teachers:
                soft = teacher_soft_labels(
                    posterior,
                    reliabilities(*config.reliability, m),
                    config.concentration,
                    _rng(seed, 3, n, m),
                )
                result = self._fits(x, y_noisy, soft, x_test, y_test, grid=m <= config.grid_up_to)
                rows.append(
                    {"seed": seed, "teachers": m, "labelled_per_class": n}
                    | result
                    | {"bayes_accuracy": bayes}
                )
        return {"results": rows}

    def _classifier(self, **settings) -> GDDAClassifier:
        """The configured classifier over every class, fed the teachers' probabilities."""
        fixed = {"classes": range(self.config.classes), "teacher_outputs": "probabilities"}
        return GDDAClassifier(**{**self.config.classifier, **fixed, **settings})

    def _fits(
        self,
        x: np.ndarray,
        y: np.ndarray,
        soft: np.ndarray,
        x_test: np.ndarray,
        y_test: np.ndarray,
        grid: bool,
    ) -> dict:
        """λ*, λ̂ (and the grid's λ) for labelled rows ``x`` (L, d) with labels ``y`` (L,) and
        teachers' soft labels ``soft`` (L, M, N), scored on ``x_test``, ``y_test``."""
        data = {"X": x, "y": y, "teacher_probas": soft}
        n_sources = soft.shape[1] + 1
        decisions = np.stack(
            [
                self._classifier(lambda_search=vertex).fit(**data)._decision_values(x_test)
                for vertex in np.eye(n_sources)
            ]
        )
        star = best_weights(decisions, y_test)
        searches = {"": "gradient", "_star": star} | ({"_grid": "grid"} if grid else {})
        fits = {}
        for suffix, search in searches.items():
            start = time.perf_counter()
            model = self._classifier(lambda_search=search).fit(**data)
            fits[suffix] = (model, time.perf_counter() - start)
        (learned, seconds), (at_star, _) = fits[""], fits["_star"]
        result = {
            "distance": np.abs(learned.lambda_ - star).sum(),
            "same_source": float(np.argmax(learned.lambda_) == np.argmax(star)),
            "star_at_vertex": float(star.max() >= VERTEX),
            "lambda_0": learned.lambda_[0],
            "lambda_0_star": star[0],
            "lambda_1": learned.lambda_[1],
            "lambda_1_star": star[1],
        }
        for suffix, model in (("", learned), ("_star", at_star)):
            scores = model._decision_values(x_test)
            result[f"accuracy{suffix}"] = float(np.mean(scores.argmax(1) == y_test))
            result[f"cross_entropy{suffix}"] = cross_entropy(scores, y_test)
        result["accuracy_labels"] = float(np.mean(decisions[0].argmax(1) == y_test))
        result["cross_entropy_labels"] = cross_entropy(decisions[0], y_test)
        result["excess_cross_entropy"] = result["cross_entropy"] - result["cross_entropy_star"]
        result["loo_loss"], result["seconds"] = learned.loo_loss_, seconds
        if grid:
            model, seconds_grid = fits["_grid"]
            result["distance_grid"] = np.abs(model.lambda_ - star).sum()
            result["loo_loss_grid"], result["seconds_grid"] = model.loo_loss_, seconds_grid
        result = {key: float(value) for key, value in result.items()}
        result["lambda"], result["lambda_star"] = _weights(learned.lambda_), _weights(star)
        if grid:
            result["lambda_grid"] = _weights(fits["_grid"][0].lambda_)
        return result

    def table(self, rows: Rows) -> tuple[list[dict], str]:
        seeds = {str(s) for s in self.config.seeds}
        results = [row for row in rows["results"] if str(row["seed"]) in seeds]
        values: dict[tuple[str, str], list[float]] = defaultdict(list)
        for m in self.config.teachers:
            for n in self.config.labelled_per_class:
                for row in results:
                    if (int(row["teachers"]), int(row["labelled_per_class"])) != (m, n):
                        continue
                    for metric in (*WEIGHT_METRICS, *TEST_METRICS):
                        if row.get(metric, "") != "":
                            values[_arm(m, n), metric].append(float(row[metric]))
        table = summarize(values)
        _plot_distance(
            results, self.config.teachers, self.out / "figures" / "distance.png", self.config.name
        )
        return table, self._markdown(table)

    def _markdown(self, table: list[dict]) -> str:
        config = self.config
        setting = (
            f"**{config.name}**: mean ± std over {len(config.seeds)} seeds, one row per number of "
            f"teachers M and labelled rows per class n (labels replaced at random with "
            f"probability {config.label_noise:g}; teachers' reliabilities "
            f"{config.reliability[0]:g} to {config.reliability[1]:g})."
        )
        weights = (
            f"{setting} Imitation weights: λ̂ learned by gradient on the leave-one-out loss, λ* "
            "the Test-best (exact); `distance` ‖λ̂ − λ*‖₁ (range [0, 2]), `distance_grid` for the "
            f"LOO-best point of the grid {{0, 0.1, …, 1}}^(M+1) (M ≤ {config.grid_up_to}); "
            "`same_source`: share of seeds where λ̂ and λ* put their largest weight on the same "
            f"source; `star_at_vertex`: share where λ*'s largest weight is ≥ {VERTEX}; λ₀ the "
            f"true labels' weight, λ₁ teacher 1's (r = {config.reliability[0]:g}; `_star`: in λ*)."
        )
        scores = (
            "Test accuracy and cross-entropy at λ̂ (no suffix), at λ* (`_star`) and with the "
            "labels alone (`_labels`); `bayes_accuracy` the true posterior's; "
            "`excess_cross_entropy` CE(λ̂) − CE(λ*); the LOO loss at λ̂ and at the grid's λ; "
            "fit times in seconds."
        )
        return "\n".join(
            markdown_table([row for row in table if row["metric"] in metrics], caption)
            for metrics, caption in ((WEIGHT_METRICS, weights), (TEST_METRICS, scores))
        )


def _arm(teachers: int, per_class: int) -> str:
    return f"M={teachers}, n={per_class}"


def _plot_distance(results: list[dict], teachers: list[int], path: Path, title: str) -> None:
    """Against the labelled rows per class n, one colour per number of teachers M: ‖λ̂ − λ*‖₁
    (left) and CE(λ̂) − CE(λ*) (right), each seed a dot (spread sideways per M), the line
    through the means over seeds."""
    panels = (("distance", "‖λ̂ − λ*‖₁ (range [0, 2])"), ("excess_cross_entropy", "CE(λ̂) − CE(λ*)"))
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (metric, label) in zip(axes, panels, strict=True):
        for index, m in enumerate(teachers):
            by_n: dict[int, list[float]] = defaultdict(list)
            for row in results:
                if int(row["teachers"]) == m:
                    by_n[int(row["labelled_per_class"])].append(float(row[metric]))
            ns = sorted(by_n)
            shift = 1.06 ** (index - (len(teachers) - 1) / 2)  # side by side on the log axis
            line = ax.plot([n * shift for n in ns], [mean(by_n[n]) for n in ns], marker="o")
            for n in ns:
                ax.scatter(
                    [n * shift] * len(by_n[n]), by_n[n], s=10, alpha=0.35, color=line[0].get_color()
                )
            line[0].set_label(f"M = {m}")
        ax.set_xscale("log")
        ax.set_xticks(sorted({int(r["labelled_per_class"]) for r in results}))
        ax.xaxis.set_major_formatter("{x:g}")
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.set_xlabel("labelled rows per class n")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.05, 2.05)
    axes[0].legend(fontsize=8)
    figure.suptitle(
        f"{title}: learned against Test-best imitation weights (dots: seeds)", fontsize=9
    )
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
