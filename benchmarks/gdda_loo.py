"""What the GDDA-SVM's closed forms save: LOO without refits, λ by gradient, and a large fit.

Seeded synthetic float64 data: N = 5 Gaussian class blobs in d dimensions (unit noise, class
means 0.4 · e_n, so that X alone separates them poorly), the given labels 30 % noisy (a random
class), an informative teacher (soft labels 0.05 + 0.75 · onehot(clean class)) and noise
teachers (Dirichlet(1) probabilities). Linear kernel with the bias feature (intercept_scaling = 1),
C = 1.

Printed numbers (``benchmarks/README.md`` explains them):

1. At L = 1 000, d = 50, one (informative) teacher, λ = (0.6, 0.4), every row labelled, for the
   dual and the primal solver: seconds (median of 5) of the closed-form LOO predictions of all L
   rows (the λ search's first evaluation: kernel or features, ``_LooProblem`` with its one
   factorisation, and ``_LooProblem.loo``), seconds of each further λ on the simplex (mean over
   the 11 points ``(k/10, 1 − k/10)``, which reuse that factorisation), seconds of the explicit
   refit LOO (L fits on L − 1 rows, each a linear solve, then the prediction at the held-out row,
   timed on a random subset of k rows and extrapolated × L/k, as the output says), the speed-up
   (refit / closed form, target ≥ 100×) and the largest absolute difference between the two
   (L, N) sets of LOO predictions (on the timed rows).
2. At L = 1 000, d = 50, for M = 3 sources (true labels, noise teacher, informative teacher) and
   M = 5 (also a confused teacher, whose soft labels name the next class, and a second noise
   teacher), with every row labelled or with one labelled row per class (the first row given
   each label; the other 995 unlabelled), for the primal and the dual solver: ``GDDAClassifier``
   fit seconds (median of 3) with the gradient search of λ and with the grid
   ``{0, 0.1, …, 1}^M ∩ simplex`` (66 points for M = 3, 1 001 for M = 5), their ratio (target
   ≥ 10×), each one's LOO loss (target: gradient ≤ grid + 1e-4), the gradient's iterations, and
   both λ.
3. At L = 50 000, d = 512, N = 5, one teacher, every row labelled, primal solver: seconds of one
   ``fit`` (gradient search of λ) and the peak of memory newly allocated during it (tracemalloc,
   which sees numpy's arrays), next to the 0.2 GB of X itself.

The last table repeats each target of 1 and 2 with ok or MISS (3 has none).
"""

from __future__ import annotations

import os
import platform
import time
import tracemalloc

import numpy as np
import sklearn

from crossdistill.methods import GDDAClassifier
from crossdistill.methods.gdda import _LooProblem, simplex_grid, soft_label_tensor

SEED = 0
N_CLASSES = 5
C = 1.0
LOO_ROWS, LOO_DIM = 1_000, 50
REFIT_ROWS = {"dual": 50, "primal": 200}  # refits timed on k random rows, extrapolated × L/k
CLOSED_REPEATS = 5  # the closed form's seconds: median of 5 (milliseconds, noisy alone)
LAMBDA_LOO = np.array([0.6, 0.4])
SEARCH_SOURCES = (3, 5)
BIG_ROWS, BIG_DIM = 50_000, 512


def blobs(n_rows: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X (L, d), 30 % noisy labels (L,), and the clean classes (L,)."""
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, N_CLASSES, n_rows)
    x = rng.normal(size=(n_rows, dim)) + 0.4 * np.eye(N_CLASSES, dim)[clean]
    y = clean.copy()
    flip = rng.random(n_rows) < 0.3
    y[flip] = rng.integers(0, N_CLASSES, flip.sum())
    return x, y, clean


def informative_teacher(clean: np.ndarray) -> np.ndarray:
    """Soft labels of the clean class, (L, N), rows summing to 1."""
    return 0.05 + 0.75 * np.eye(N_CLASSES)[clean]


def one_label_per_class(y: np.ndarray) -> np.ndarray:
    """The ``unlabelled`` mask (L,) that keeps only the first row of each label labelled."""
    unlabelled = np.ones(len(y), bool)
    unlabelled[[int(np.flatnonzero(y == n)[0]) for n in range(N_CLASSES)]] = False
    return unlabelled


def refit_loo(
    x: np.ndarray, soft: np.ndarray, mask: np.ndarray, rows: np.ndarray, dual: bool
) -> np.ndarray:
    """Explicit LOO: for each row i in ``rows``, fit on the other L − 1 rows and predict x_i.

    Dual: (I + 2C Ω K) α = 2C u on the kept rows' kernel; primal: (XᵀΩX + I/2C) w = Xᵀu. Returns
    the predictions (len(rows), N).
    """
    feats = np.hstack([x, np.ones((len(x), 1))])
    kernel = feats @ feats.T
    omega_all = mask @ LAMBDA_LOO
    u_all = np.einsum("imn,im,m->in", soft, mask, LAMBDA_LOO)
    out = np.empty((len(rows), N_CLASSES))
    for r, i in enumerate(rows):
        keep = np.arange(len(x)) != i
        omega, u = omega_all[keep], u_all[keep]
        if dual:
            k = kernel[np.ix_(keep, keep)]
            alpha = np.linalg.solve(np.eye(len(k)) + 2 * C * omega[:, None] * k, 2 * C * u)
            out[r] = kernel[i, keep] @ alpha
        else:
            f = feats[keep]
            a = f.T @ (omega[:, None] * f) + np.eye(f.shape[1]) / (2 * C)
            out[r] = feats[i] @ np.linalg.solve(a, f.T @ u)
    return out


def loo_problem(x: np.ndarray, y: np.ndarray, soft: np.ndarray, dual: bool) -> _LooProblem:
    """The library's LOO problem, with its factorisation for the simplex (every row labelled)."""
    feats = np.hstack([x, np.ones((len(x), 1))])
    labelled = np.ones(len(y), bool)
    if dual:
        return _LooProblem(soft, y, labelled, C, kernel=feats @ feats.T)
    return _LooProblem(soft, y, labelled, C, features=feats)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def loo_section(checks: list[tuple[str, str, bool]]) -> None:
    x, y, clean = blobs(LOO_ROWS, LOO_DIM, SEED)
    labelled = np.ones(len(y), bool)
    soft, mask = soft_label_tensor(y, labelled, informative_teacher(clean)[:, None, :], N_CLASSES)
    rng = np.random.default_rng(SEED + 1)
    others = [np.array([k / 10, 1 - k / 10]) for k in range(11)]
    print(f"1. closed-form LOO vs explicit refits, L = {LOO_ROWS}, d = {LOO_DIM}, one teacher")
    print(
        f"   {'solver':<7} {'closed s':>9} {'next λ s':>9} {'refit s':>9} {'speed-up':>9} "
        f"{'max |diff|':>11}"
    )
    for name, dual in (("dual", True), ("primal", False)):
        runs = [timed(lambda d=dual: loo_problem(x, y, soft, d)) for _ in range(CLOSED_REPEATS)]
        t_closed = float(np.median([t + timed(p.loo, LAMBDA_LOO)[0] for t, p in runs]))
        problem = runs[0][1]
        closed = problem.loo(LAMBDA_LOO)
        t_next = timed(lambda p=problem: [p.loo(lam) for lam in others])[0] / len(others)
        rows = np.sort(rng.choice(LOO_ROWS, REFIT_ROWS[name], replace=False))
        t_refit, refit = timed(refit_loo, x, soft, mask, rows, dual)
        t_refit *= LOO_ROWS / len(rows)
        diff = float(np.max(np.abs(closed[rows] - refit)))
        note = f"  (refit: {len(rows)} rows timed, × {LOO_ROWS}/{len(rows)})"
        ratio = t_refit / t_closed
        print(
            f"   {name:<7} {t_closed:9.3f} {t_next:9.1e} {t_refit:9.2f} {ratio:8.0f}× "
            f"{diff:11.1e}{note}"
        )
        checks.append((f"LOO speed-up, {name}", "≥ 100×", ratio >= 100))
        checks.append((f"LOO max |diff|, {name}", "≤ 1e-8", diff <= 1e-8))


def lambda_section(checks: list[tuple[str, str, bool]]) -> None:
    x, y, clean = blobs(LOO_ROWS, LOO_DIM, SEED + 2)
    teachers = [
        np.random.default_rng(SEED + 3).dirichlet(np.ones(N_CLASSES), size=LOO_ROWS),
        informative_teacher(clean),
        informative_teacher((clean + 1) % N_CLASSES),
        np.random.default_rng(SEED + 5).dirichlet(np.ones(N_CLASSES), size=LOO_ROWS),
    ]
    labellings = {"all": None, "1/class": one_label_per_class(y)}
    print(f"\n2. λ by gradient vs the 11-point grid, L = {LOO_ROWS}, d = {LOO_DIM} (median of 3)")
    print(
        f"   {'M':>1} {'labelled':<8} {'solver':<6} {'grid pts':>8} {'grad s':>7} {'grid s':>7} "
        f"{'grid/grad':>9} {'LOO grad':>9} {'LOO grid':>9} {'grad−grid':>10} {'n_iter':>6}"
    )
    lambdas = []
    for n_sources in SEARCH_SOURCES:
        for labelling, unlabelled in labellings.items():
            for solver in ("primal", "dual"):
                fits = {}
                for search in ("gradient", "grid"):
                    clf = GDDAClassifier(C=C, lambda_search=search, solver=solver)
                    runs = [
                        timed(clf.fit, x, y, teachers[: n_sources - 1], unlabelled=unlabelled)
                        for _ in range(3)
                    ]
                    fits[search] = (float(np.median([r[0] for r in runs])), runs[0][1])
                (t_grad, grad), (t_grid, grid) = fits["gradient"], fits["grid"]
                ratio, gap = t_grid / t_grad, grad.loo_loss_ - grid.loo_loss_
                points = len(simplex_grid(n_sources))
                print(
                    f"   {n_sources:>1} {labelling:<8} {solver:<6} {points:>8} {t_grad:7.3f} "
                    f"{t_grid:7.3f} {ratio:8.1f}× {grad.loo_loss_:9.5f} {grid.loo_loss_:9.5f} "
                    f"{gap:+10.1e} {grad.n_iter_:>6}"
                )
                name = f"M = {n_sources}, {labelling}, {solver}"
                lambdas.append((name, grad.lambda_, grid.lambda_))
                checks.append((f"λ search speed-up, {name}", "≥ 10×", ratio >= 10))
                checks.append((f"LOO gradient − grid, {name}", "≤ 1e-4", gap <= 1e-4))
    print("   λ (labels, noise, informative[, confused, noise]) by gradient | by grid:")
    for name, by_grad, by_grid in lambdas:
        print(
            f"   {name:<24} ({', '.join(f'{v:.3f}' for v in by_grad)}) | "
            f"({', '.join(f'{v:.1f}' for v in by_grid)})"
        )


def big_section() -> None:
    x, y, clean = blobs(BIG_ROWS, BIG_DIM, SEED + 4)
    teacher = informative_teacher(clean)
    clf = GDDAClassifier(C=C, solver="primal")
    tracemalloc.start()
    seconds, clf = timed(clf.fit, x, y, [teacher])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"\n3. large fit, L = {BIG_ROWS}, d = {BIG_DIM}, N = {N_CLASSES}, one teacher, primal")
    lam = ", ".join(f"{v:.3f}" for v in clf.lambda_)
    print(
        f"   fit {seconds:.1f} s, n_iter {clf.n_iter_}, λ = ({lam}); peak new memory "
        f"{peak / 2**30:.2f} GiB (X itself {x.nbytes / 2**30:.2f} GiB)"
    )


def main() -> None:
    print(
        f"machine: numpy {np.__version__}, scikit-learn {sklearn.__version__}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}\n"
    )
    checks: list[tuple[str, str, bool]] = []
    loo_section(checks)
    lambda_section(checks)
    big_section()
    print(f"\n   {'check':<48} {'target':<8} result")
    for name, target, ok in checks:
        print(f"   {name:<48} {target:<8} {'ok' if ok else 'MISS'}")


if __name__ == "__main__":
    main()
