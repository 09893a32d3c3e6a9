"""What the GDDA-SVM's closed forms save: LOO without refits, λ by gradient, and a large fit.

Seeded synthetic float64 data: N = 5 Gaussian class blobs in d dimensions (unit noise, class
means 0.4 · e_n, so that X alone separates them poorly), the given labels 30 % noisy (a random
class), an informative teacher (soft labels 0.05 + 0.75 · onehot(clean class)) and a noise
teacher (Dirichlet(1) probabilities).
Linear kernel with the bias feature (intercept_scaling = 1), C = 1, every row labelled.

Printed numbers (``benchmarks/README.md`` explains them):

1. At L = 1 000, d = 50, one (informative) teacher, λ = (0.6, 0.4), for the dual and the primal
   solver: seconds of the closed-form LOO predictions of all L rows (``_LooProblem.solve``, the
   kernel matrix or the features given), seconds of the explicit refit LOO (L fits on L − 1 rows,
   each a linear solve, then the prediction at the held-out row, timed on a random subset of k
   rows and extrapolated × L/k, as the output says), the speed-up (refit /
   closed form, target ≥ 100×) and the largest absolute difference between the two (L, N) sets of
   LOO predictions (on the timed rows).
2. At L = 1 000, d = 50, M = 3 sources (true labels, noise teacher, informative teacher),
   ``GDDAClassifier`` with ``solver="auto"`` (here the primal): fit seconds (median of 3) of the
   gradient search of λ and of the 66-point grid ``{0, 0.1, …, 1}³ ∩ simplex``, their ratio
   (target ≥ 10×), each one's LOO loss (target: gradient ≤ grid + 1e-4) and both
   λ = (labels, noise, informative).
3. At L = 50 000, d = 512, N = 5, one teacher, primal solver: seconds of one ``fit`` (gradient
   search of λ) and the peak of memory newly allocated during it (tracemalloc, which sees numpy's
   arrays), next to the 0.2 GB of X itself.

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
from crossdistill.methods.gdda import _LooProblem, soft_label_tensor

SEED = 0
N_CLASSES = 5
C = 1.0
LOO_ROWS, LOO_DIM = 1_000, 50
REFIT_ROWS = {"dual": 50, "primal": 200}  # refits timed on k random rows, extrapolated × L/k
LAMBDA_LOO = np.array([0.6, 0.4])
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


def closed_form_loo(x: np.ndarray, soft: np.ndarray, mask: np.ndarray, dual: bool) -> np.ndarray:
    """The library's closed-form LOO predictions of every row, (L, N)."""
    feats = np.hstack([x, np.ones((len(x), 1))])
    y = np.zeros(len(x), dtype=int)  # labels only enter the loss, not the predictions
    if dual:
        problem = _LooProblem(soft, mask, y, C, kernel=feats @ feats.T)
    else:
        problem = _LooProblem(soft, mask, y, C, features=feats)
    return problem.solve(LAMBDA_LOO).loo


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def loo_section(checks: list[tuple[str, str, bool]]) -> None:
    x, y, clean = blobs(LOO_ROWS, LOO_DIM, SEED)
    soft, mask = soft_label_tensor(y, informative_teacher(clean)[:, None, :], N_CLASSES)
    rng = np.random.default_rng(SEED + 1)
    print(f"1. closed-form LOO vs explicit refits, L = {LOO_ROWS}, d = {LOO_DIM}, one teacher")
    print(f"   {'solver':<7} {'closed s':>9} {'refit s':>9} {'speed-up':>9} {'max |diff|':>11}")
    for name, dual in (("dual", True), ("primal", False)):
        t_closed, closed = timed(closed_form_loo, x, soft, mask, dual)
        rows = np.sort(rng.choice(LOO_ROWS, REFIT_ROWS[name], replace=False))
        t_refit, refit = timed(refit_loo, x, soft, mask, rows, dual)
        t_refit *= LOO_ROWS / len(rows)
        diff = float(np.max(np.abs(closed[rows] - refit)))
        note = f"  (refit: {len(rows)} rows timed, × {LOO_ROWS}/{len(rows)})"
        ratio = t_refit / t_closed
        print(f"   {name:<7} {t_closed:9.3f} {t_refit:9.2f} {ratio:8.0f}× {diff:11.1e}{note}")
        checks.append((f"LOO speed-up, {name}", "≥ 100×", ratio >= 100))
        checks.append((f"LOO max |diff|, {name}", "≤ 1e-8", diff <= 1e-8))


def lambda_section(checks: list[tuple[str, str, bool]]) -> None:
    x, y, clean = blobs(LOO_ROWS, LOO_DIM, SEED + 2)
    noise = np.random.default_rng(SEED + 3).dirichlet(np.ones(N_CLASSES), size=LOO_ROWS)
    teachers = [noise, informative_teacher(clean)]
    print(f"\n2. λ by gradient vs the 11-point grid, L = {LOO_ROWS}, d = {LOO_DIM}, M = 3")
    print(f"   {'search':<9} {'fit s':>7} {'LOO loss':>10}  λ (labels, noise, informative)")
    fits = {}
    for search in ("gradient", "grid"):
        runs = [
            timed(GDDAClassifier(C=C, lambda_search=search).fit, x, y, teachers) for _ in range(3)
        ]
        seconds, clf = float(np.median([r[0] for r in runs])), runs[0][1]
        fits[search] = (seconds, clf)
        lam = ", ".join(f"{v:.3f}" for v in clf.lambda_)
        print(f"   {search:<9} {seconds:7.3f} {clf.loo_loss_:10.6f}  ({lam})  n_iter {clf.n_iter_}")
    ratio = fits["grid"][0] / fits["gradient"][0]
    gap = fits["gradient"][1].loo_loss_ - fits["grid"][1].loo_loss_
    print(f"   grid / gradient fit time: {ratio:.1f}×; LOO loss gradient − grid: {gap:+.2e}")
    checks.append(("λ search speed-up (grid / gradient)", "≥ 10×", ratio >= 10))
    checks.append(("LOO loss, gradient − grid", "≤ 1e-4", gap <= 1e-4))


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
    print(f"\n   {'check':<38} {'target':<10} result")
    for name, target, ok in checks:
        print(f"   {name:<38} {target:<10} {'ok' if ok else 'MISS'}")


if __name__ == "__main__":
    main()
