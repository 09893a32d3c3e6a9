"""GDDA-SVM (SPEC §1.6): multi-source domain adaptation with a distilling least-squares SVM.

The student is one LS-SVM per class ``n`` fitted on the target features ``X`` (L, d) against a
soft-label tensor ``S`` (L, M, N): source ``j = 0`` is the one-hot true label, sources
``j = 1 … M−1`` are the source teachers' probabilities.  Per class it minimises

    ½‖w_n‖² + C Σ_{i,j} λ_j m_ij (s_ijn − f_n(x_i))²,      λ on the simplex,

where ``m_ij ∈ {0, 1}`` masks missing soft labels: ``m_i0 = 0`` on unlabelled rows (``y_i = −1``),
every other ``m_ij = 1``.  Completing the square, the sum over sources is one weighted regression

    ω_i = Σ_j λ_j m_ij,     t_in = Σ_j λ_j m_ij s_ijn / ω_i,     loss C Σ_i ω_i (t_in − f_n(x_i))²,

so a labelled row has weight ``ω_i = Σ_j λ_j = 1`` and the paper's target ``Σ_j λ_j s_ijn``, and an
unlabelled row has weight ``1 − λ_0`` and the teachers' renormalised mixture as target: it
contributes the teachers' soft labels only.  Rows with ``ω_i = 0`` (unlabelled rows when
``λ_0 = 1``, or every unlabelled row without teachers) drop out of the fit.

In the dual (paper eq. 8) the row weights enter as a diagonal: ``M = K + diag(1/(2Cω))``, which is
the paper's ``K + I/(2C)`` when every row is labelled; ``η = M⁻¹ t`` and the exact leave-one-out
prediction is ``Ŷ_in = t_in − η_in / (M⁻¹)_ii``, i.e. ``Σ_j λ_j (s_ijn − η′_ijn / (M⁻¹)_ii)`` on a
labelled row.  For a linear kernel with fewer features than rows the same numbers come from the
primal hat matrix ``H = X (XᵀΩX + I/(2C))⁻¹ XᵀΩ`` as ``t − (t − Ht) / (1 − diag H)`` (as
scikit-learn's ``_RidgeGCV`` switches between a Gram and a covariance decomposition).

Bias: a *penalised* bias, by appending a constant feature ``intercept_scaling`` (the kernel gains
``intercept_scaling²``); it keeps the LOO formulas exact. ``intercept_scaling=0`` removes it.

λ minimises the LOO loss on the labelled rows — softmax cross-entropy of ``Ŷ`` (paper eq. 9) or the
multiclass hinge (eq. 10–11) — by projected gradient descent with backtracking, or by the grid
``{0, 0.1, …, 1}^M ∩ simplex``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

UNLABELLED = -1
_EPS_WEIGHT = 1e-12


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of ``v`` (M,) onto the probability simplex {λ ≥ 0, Σλ = 1}, (M,)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.arange(1, v.size + 1)
    rho = np.nonzero(u - css / k > 0)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1), 0.0)


def simplex_grid(n_sources: int, steps: int = 10) -> np.ndarray:
    """All λ in ``{0, 1/steps, …, 1}^M`` summing to 1, (C(steps + M − 1, M − 1), M)."""
    # stars and bars: the M − 1 bar positions among steps + M − 1 slots
    points = []
    for bars in itertools.combinations(range(steps + n_sources - 1), n_sources - 1):
        edges = np.array([-1, *bars, steps + n_sources - 1])
        points.append(np.diff(edges) - 1)
    return np.asarray(points, dtype=np.float64).reshape(-1, n_sources) / steps


def soft_label_tensor(
    y_index: np.ndarray, teachers: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The soft labels ``S`` (L, M, N) and their mask ``m`` (L, M).

    ``y_index`` (L,) holds class indices with −1 for unlabelled rows; ``teachers`` (L, M−1, N).
    ``S[:, 0]`` is one-hot on labelled rows and zero (masked out) on unlabelled ones.
    """
    n_rows = y_index.shape[0]
    labelled = y_index >= 0
    truth = np.zeros((n_rows, 1, n_classes))
    truth[np.flatnonzero(labelled), 0, y_index[labelled]] = 1.0
    soft = np.concatenate([truth, teachers], axis=1)
    mask = np.ones(soft.shape[:2])
    mask[:, 0] = labelled
    return soft, mask


@dataclass
class _Solution:
    """One fit at fixed λ on the active rows: targets, dual coefficients, LOO predictions."""

    active: np.ndarray  # (L,) bool, rows with ω_i > 0
    weights: np.ndarray  # (A,) ω on active rows
    targets: np.ndarray  # (A, N) t
    eta: np.ndarray  # (A, N) dual coefficients η = M⁻¹ t
    g_diag: np.ndarray  # (A,) diag(M⁻¹)
    loo: np.ndarray  # (A, N) leave-one-out predictions Ŷ
    ops: Any  # the backend that applies M⁻¹


class _DualOps:
    """M⁻¹ = (K + D)⁻¹ formed explicitly from the kernel matrix K (A, A)."""

    def __init__(self, kernel: np.ndarray, diag: np.ndarray) -> None:
        m = kernel + np.diag(diag)
        self.g = np.linalg.inv(m)
        self.g = (self.g + self.g.T) / 2

    def apply(self, v: np.ndarray) -> np.ndarray:
        return self.g @ v

    def diag(self) -> np.ndarray:
        return np.diag(self.g).copy()

    def diag_geg(self, e: np.ndarray) -> np.ndarray:
        """diag(M⁻¹ diag(e) M⁻¹), (A,)."""
        return (self.g * self.g) @ e


class _PrimalOps:
    """M⁻¹ = (XXᵀ + D)⁻¹ through Woodbury: 2C(Ω − ΩX (XᵀΩX + I/2C)⁻¹ XᵀΩ), from X (A, p)."""

    def __init__(self, x: np.ndarray, weights: np.ndarray, c: float) -> None:
        self.c2 = 2.0 * c
        self.w = weights
        self.b = weights[:, None] * x
        a = x.T @ self.b + np.eye(x.shape[1]) / self.c2
        self.p = np.linalg.inv(a)
        self.q = self.b @ self.p  # (A, p)
        self.hat_diag = np.einsum("ij,ij->i", self.q, self.b)  # diag(ΩX P XᵀΩ)

    def apply(self, v: np.ndarray) -> np.ndarray:
        return self.c2 * (self.w[:, None] * v - self.q @ (self.b.T @ v))

    def diag(self) -> np.ndarray:
        return self.c2 * (self.w - self.hat_diag)

    def diag_geg(self, e: np.ndarray) -> np.ndarray:
        r = self.b.T @ (e[:, None] * self.b)
        cross = np.einsum("ij,ij->i", self.q @ r, self.q)
        w = self.w
        return self.c2**2 * (w * w * e - 2 * w * e * self.hat_diag + cross)


class _LooProblem:
    """The LOO loss of the GDDA LS-SVM as a function of λ, with its analytic gradient.

    ``features`` (L, d) with the bias column appended (primal) or the kernel (L, L) (dual).
    """

    def __init__(
        self,
        soft: np.ndarray,
        mask: np.ndarray,
        y_index: np.ndarray,
        c: float,
        *,
        kernel: np.ndarray | None = None,
        features: np.ndarray | None = None,
        loss: str = "log",
    ) -> None:
        self.soft, self.mask, self.y_index = soft, mask, y_index
        self.c, self.kernel, self.features, self.loss = c, kernel, features, loss

    def solve(self, lam: np.ndarray) -> _Solution:
        """Fit at ``lam`` (M,) and return the LOO predictions of every active row."""
        omega_all = self.mask @ lam
        active = omega_all > _EPS_WEIGHT
        omega = omega_all[active]
        u = np.einsum("imn,im,m->in", self.soft[active], self.mask[active], lam)
        t = u / omega[:, None]
        diag = 1.0 / (2.0 * self.c * omega)
        if self.kernel is not None:
            ops: Any = _DualOps(self.kernel[np.ix_(active, active)], diag)
        else:
            ops = _PrimalOps(self.features[active], omega, self.c)
        eta = ops.apply(t)
        g = ops.diag()
        return _Solution(active, omega, t, eta, g, t - eta / g[:, None], ops)

    def _loss_and_dloss(self, loo: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean loss over labelled rows and ∂loss/∂Ŷ, from ``loo`` (B, N) and ``y`` (B,)."""
        n_rows = y.shape[0]
        rows = np.arange(n_rows)
        if self.loss == "log":
            logp = log_softmax(loo, axis=1)
            grad = np.exp(logp)
            grad[rows, y] -= 1.0
            return float(-logp[rows, y].mean()), grad / n_rows
        margins = 1.0 + loo - loo[rows, y][:, None]
        margins[rows, y] = 0.0
        r = margins.argmax(axis=1)
        value = margins[rows, r]
        grad = np.zeros_like(loo)
        hit = value > 0
        grad[rows[hit], r[hit]] += 1.0
        grad[rows[hit], y[hit]] -= 1.0
        return float(value.mean()), grad / n_rows

    def value(self, lam: np.ndarray) -> float:
        """The LOO loss over labelled rows at ``lam`` (M,)."""
        sol = self.solve(lam)
        y = self.y_index[sol.active]
        lab = y >= 0
        return self._loss_and_dloss(sol.loo[lab], y[lab])[0]

    def value_and_grad(self, lam: np.ndarray) -> tuple[float, np.ndarray]:
        """The LOO loss and its gradient ∂L/∂λ (M,), λ treated as free in the positive orthant.

        On the simplex with every row labelled the gradient equals the paper's eq. 9,
        ``Σ_{i,n} μ_ijn (P_in − Y_in)``, plus a term that is the same for every j (the derivative
        of the weights ω = Σλ), which the simplex projection ignores.
        """
        sol = self.solve(lam)
        y = self.y_index[sol.active]
        lab = y >= 0
        value, dloss = self._loss_and_dloss(sol.loo[lab], y[lab])
        soft, mask = self.soft[sol.active], self.mask[sol.active]
        omega, t, eta, g = sol.weights, sol.targets, sol.eta, sol.g_diag
        grad = np.zeros(lam.size)
        for j in range(lam.size):
            m = mask[:, j]
            dt = m[:, None] * (soft[:, j] - t) / omega[:, None]
            dd = -m / (2.0 * self.c * omega**2)
            deta = sol.ops.apply(dt - dd[:, None] * eta)
            dg = -sol.ops.diag_geg(dd)
            dloo = dt - deta / g[:, None] + eta * (dg / g**2)[:, None]
            grad[j] = np.sum(dloss * dloo[lab])
        return value, grad


def _as_teacher_array(teacher_probas: Any, n_rows: int) -> np.ndarray:
    """Teachers' probabilities as (L, M−1, N), from a list of (L, N) arrays or an (L, M−1, N)
    array (the array form is what cross-validation can slice by rows)."""
    if teacher_probas is None:
        return np.zeros((n_rows, 0, 0))
    if isinstance(teacher_probas, np.ndarray) and teacher_probas.ndim in (2, 3):
        arr = np.asarray(teacher_probas, dtype=np.float64)
        arr = arr[:, None, :] if arr.ndim == 2 else arr  # one teacher given as (L, N)
    elif isinstance(teacher_probas, Sequence | np.ndarray):
        parts = [np.asarray(p, dtype=np.float64) for p in teacher_probas]
        if any(p.ndim != 2 for p in parts):
            raise ValueError("teacher_probas must be a list of (n_samples, n_classes) arrays")
        arr = np.stack(parts, axis=1) if parts else np.zeros((n_rows, 0, 0))
    else:
        raise TypeError(f"teacher_probas must be a list of arrays, got {type(teacher_probas)}")
    if arr.shape[0] != n_rows:
        raise ValueError(
            f"teacher_probas has {arr.shape[0]} rows, X has {n_rows} (they must match)"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError("teacher_probas contains NaN or infinity")
    return arr


class GDDAClassifier(ClassifierMixin, BaseEstimator):
    """GDDA-SVM: a multi-source distilling LS-SVM whose source weights λ minimise the LOO loss.

    Parameters
    ----------
    C : float
        Regularisation: the squared errors are weighted by ``C`` against ``½‖w‖²``.
    kernel : {"linear", "rbf"}
        The feature map φ through its kernel.
    gamma : "scale" or float
        RBF width, ``exp(−gamma ‖x − x′‖²)``; ``"scale"`` is ``1 / (d · X.var())`` as in SVC.
    intercept_scaling : float
        Value of the constant feature that carries the (penalised) bias; 0 disables the bias.
    loss : {"log", "hinge"}
        LOO loss minimised over λ: softmax cross-entropy (eq. 9) or multiclass hinge (eq. 10–11).
    lambda_search : {"gradient", "grid"}
        Projected gradient descent from the uniform λ, or brute force over
        ``{0, 0.1, …, 1}^M ∩ simplex``.
    solver : {"auto", "dual", "primal"}
        ``"auto"`` takes the primal (hat matrix, d×d systems) for a linear kernel with fewer
        features than fitted rows, the dual (L×L systems) otherwise.
    max_iter : int
        Iterations of projected gradient descent.
    tol : float
        Stop when the λ step is shorter than ``tol`` (Euclidean norm).

    Attributes
    ----------
    classes_ : ndarray (N,)
        Class labels of the labelled rows (``y != -1``), sorted; teachers' columns follow them.
    lambda_ : ndarray (M,)
        Source weights on the simplex; ``lambda_[0]`` is the true labels' weight.
    loo_loss_ : float
        The LOO loss over the labelled rows at ``lambda_``.
    dual_coef_ : ndarray (A, N)
        Dual coefficients η on the fitted rows ``X_fit_`` (A, d), the rows with ``ω_i > 0``;
        ``f_n(x) = Σ_a η_an (k(x_a, x) + intercept_scaling²)``.
    coef_ : ndarray (N, d), intercept_ : ndarray (N,)
        Primal weights and bias (linear kernel, either solver).
    n_iter_ : int
        Gradient iterations run (1 for the grid or without teachers: one closed-form pass).
    """

    def __init__(
        self,
        C: float = 1.0,
        kernel: str = "linear",
        gamma: str | float = "scale",
        intercept_scaling: float = 1.0,
        loss: str = "log",
        lambda_search: str = "gradient",
        solver: str = "auto",
        max_iter: int = 100,
        tol: float = 1e-6,
    ) -> None:
        self.C = C
        self.kernel = kernel
        self.gamma = gamma
        self.intercept_scaling = intercept_scaling
        self.loss = loss
        self.lambda_search = lambda_search
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol

    # -- helpers ---------------------------------------------------------------------------
    def _check_params(self) -> None:
        choices = {
            "kernel": ("linear", "rbf"),
            "loss": ("log", "hinge"),
            "lambda_search": ("gradient", "grid"),
            "solver": ("auto", "dual", "primal"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not self.C > 0:
            raise ValueError(f"C must be positive, got {self.C}")
        if self.solver == "primal" and self.kernel != "linear":
            raise ValueError("solver='primal' needs kernel='linear'")

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """k(a, b) plus the bias feature's ``intercept_scaling²``, (len(a), len(b))."""
        k = a @ b.T if self.kernel == "linear" else rbf_kernel(a, b, gamma=self._gamma)
        return k + float(self.intercept_scaling) ** 2

    def _augment(self, x: np.ndarray) -> np.ndarray:
        return np.hstack([x, np.full((x.shape[0], 1), float(self.intercept_scaling))])

    def _problem(
        self, x: np.ndarray, soft: np.ndarray, mask: np.ndarray, y_index: np.ndarray
    ) -> _LooProblem:
        if self.kernel == "rbf":
            var = x.var()
            self._gamma = (
                (1.0 / (x.shape[1] * var) if var > 0 else 1.0)
                if self.gamma == "scale"
                else float(self.gamma)
            )
        primal = self.solver == "primal" or (
            self.solver == "auto" and self.kernel == "linear" and x.shape[1] + 1 < x.shape[0]
        )
        if primal:
            return _LooProblem(
                soft, mask, y_index, self.C, features=self._augment(x), loss=self.loss
            )
        return _LooProblem(soft, mask, y_index, self.C, kernel=self._kernel(x, x), loss=self.loss)

    def _search_lambda(self, problem: _LooProblem, n_sources: int) -> tuple[np.ndarray, int]:
        if n_sources == 1:
            return np.ones(1), 1
        if self.lambda_search == "grid":
            grid = simplex_grid(n_sources)
            values = [problem.value(lam) for lam in grid]
            return grid[int(np.argmin(values))], 1
        lam = np.full(n_sources, 1.0 / n_sources)
        value, grad = problem.value_and_grad(lam)
        step, n_iter = 1.0, 0
        while n_iter < self.max_iter:
            n_iter += 1
            while True:  # backtracking: accept the first projected step that decreases the loss
                new = project_simplex(lam - step * grad)
                new_value = problem.value(new)
                if new_value <= value - 1e-4 * np.dot(grad, lam - new) or step < 1e-10:
                    break
                step /= 2
            if new_value > value:
                break
            moved = np.linalg.norm(new - lam)
            lam = new
            value, grad = problem.value_and_grad(lam)
            step *= 2
            if moved < self.tol:
                break
        return lam, n_iter

    # -- estimator API -------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, teacher_probas: Any = None) -> GDDAClassifier:
        """Fit the student and learn λ.

        Parameters
        ----------
        X : array-like (L, d)
            Target-domain features.
        y : array-like (L,)
            Labels; ``-1`` marks an unlabelled row (numeric labels only).
        teacher_probas : list of M−1 arrays (L, N), or array (L, M−1, N), or None
            Source teachers' probabilities over ``classes_`` (one (L, N) array = one teacher);
            None fits a plain LS-SVM on the labelled rows. Give the (L, M−1, N) array to
            ``GridSearchCV``/``cross_validate``, which slice fit parameters by rows.

        Returns
        -------
        self
        """
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        unlabelled = (y == UNLABELLED) if y.dtype.kind in "iuf" else np.zeros(len(y), bool)
        if unlabelled.all():
            raise ValueError("y has no labelled row (every label is -1)")
        self.classes_ = np.unique(y[~unlabelled])
        n_classes = self.classes_.size
        y_index = np.full(len(y), -1)
        y_index[~unlabelled] = np.searchsorted(self.classes_, y[~unlabelled])
        teachers = _as_teacher_array(teacher_probas, X.shape[0])
        if teachers.shape[1] == 0:
            teachers = np.zeros((X.shape[0], 0, n_classes))
        elif teachers.shape[2] != n_classes:
            raise ValueError(
                f"teacher_probas have {teachers.shape[2]} columns, y has {n_classes} classes"
            )
        soft, mask = soft_label_tensor(y_index, teachers, n_classes)
        problem = self._problem(X, soft, mask, y_index)
        self.lambda_, self.n_iter_ = self._search_lambda(problem, soft.shape[1])
        self.loo_loss_ = problem.value(self.lambda_)
        sol = problem.solve(self.lambda_)
        self.X_fit_ = X[sol.active]
        self.dual_coef_ = sol.eta
        if self.kernel == "linear":
            w = self._augment(self.X_fit_).T @ sol.eta  # (d + 1, N)
            self.coef_ = w[:-1].T
            self.intercept_ = w[-1] * float(self.intercept_scaling)
        return self

    def _decision_values(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        if self.kernel == "linear":
            return X @ self.coef_.T + self.intercept_
        return self._kernel(X, self.X_fit_) @ self.dual_coef_

    def decision_function(self, X: Any) -> np.ndarray:
        """Per-class scores ``f_n(x)``, (n, N); (n,) ``f_1 − f_0`` for two classes."""
        scores = self._decision_values(X)
        if self.classes_.size == 2:
            return scores[:, 1] - scores[:, 0]
        return scores

    def predict_proba(self, X: Any) -> np.ndarray:
        """Softmax of the per-class scores, (n, N)."""
        return softmax(self._decision_values(X), axis=1)

    def predict(self, X: Any) -> np.ndarray:
        """The class with the highest score, (n,)."""
        scores = self._decision_values(X)
        return self.classes_[np.argmax(scores, axis=1)]
