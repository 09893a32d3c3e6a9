"""GDDA-SVM (Ao, 2016, "Distilling", §2): multi-source domain adaptation with a distilling
least-squares SVM.

The student is one LS-SVM per class ``n`` fitted on the target features ``X`` (L, d) against a
soft-label tensor ``S`` (L, M, N): source ``j = 0`` is the one-hot true label, sources
``j = 1 … M−1`` are the source teachers' probabilities.  Per class it minimises

    ½‖w_n‖² + C Σ_{i,j} λ_j m_ij (s_ijn − f_n(x_i))²,      λ on the simplex,

where ``m_ij ∈ {0, 1}`` masks missing soft labels: ``m_i0 = 0`` on the rows that ``fit`` is told
are unlabelled, every other ``m_ij = 1``.  Completing the square, the sum over sources is one
weighted regression

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

Evaluating λ.  The LOO loss needs the labelled rows' LOO predictions only.  The system
``A = ΦᵀΩΦ + I/(2C) = α Φ_lᵀΦ_l + β Φ_uᵀΦ_u + I/(2C)`` (labelled rows l, unlabelled rows u)
depends on λ only through ``θ = (α, β) = (Σ_j λ_j, Σ_{j≥1} λ_j)``: ``(1, 1 − λ_0)`` on the simplex,
and not through β at all when every row is labelled.  Removing labelled row i (weight α) gives by
Sherman–Morrison ``Ŷ_i = (f_i − h_i u_i) / (1 − α h_i)``, ``h_i = φ_iᵀA⁻¹φ_i``, ``f = ΦA⁻¹Φᵀu``,
``u = ωt = Σ_j λ_j m_j s_j``; so at fixed θ the LOO predictions are linear in λ,
``Ŷ_l = Σ_j λ_j μ_j(θ)`` with ``μ_j = (F_j − h s_j) / (1 − α h)``, ``F_j = Φ_l A⁻¹ Φᵀ (m_j s_j)``.
One factorisation per θ therefore serves every λ that shares it — the whole search when every row
is labelled, one per value of λ_0 otherwise — and the loss and its gradient cost O(B·M·N) on the B
labelled rows.  The primal forms the two Gram parts once and factorises a (d+1)×(d+1) matrix per θ;
the dual eliminates the unlabelled rows by a Schur complement through an eigendecomposition of
``K_uu`` computed once, O(U·B² + U·M·N·B + B³) per θ.  The gradient is
``∂Ŷ/∂λ_j = μ_j + Σ_k (∂θ_k/∂λ_j) Σ_i λ_i ∂μ_i/∂θ_k``, ∂μ/∂θ from the same factorisation.

λ minimises the LOO loss on the labelled rows — softmax cross-entropy of ``Ŷ`` (paper eq. 9) or the
multiclass hinge (eq. 10–11) — by projected gradient descent with backtracking, or by the grid
``{0, 0.1, …, 1}^M ∩ simplex``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve, cholesky, solve_triangular
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

_EPS_WEIGHT = 1e-12
_SUM_TOLERANCE = 1e-4
"""How far from 1 a row of teacher probabilities may sum (float32 softmax outputs are ~1e-6 off)."""


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
    y_index: np.ndarray, labelled: np.ndarray, teachers: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The soft labels ``S`` (L, M, N) and their mask ``m`` (L, M).

    ``y_index`` (L,) holds class indices, read on the ``labelled`` (L,) bool rows only;
    ``teachers`` (L, M−1, N). ``S[:, 0]`` is one-hot on labelled rows and zero (masked out) on
    unlabelled ones.
    """
    n_rows = labelled.shape[0]
    truth = np.zeros((n_rows, 1, n_classes))
    rows = np.flatnonzero(labelled)
    truth[rows, 0, y_index[rows]] = 1.0
    soft = np.concatenate([truth, teachers], axis=1)
    mask = np.ones(soft.shape[:2])
    mask[:, 0] = labelled
    return soft, mask


@dataclass(frozen=True)
class _Solution:
    """The fit at one λ on its active rows (``ω_i > 0``): dual coefficients and LOO predictions."""

    active: np.ndarray  # (L,) bool, rows with ω_i > 0
    eta: np.ndarray  # (A, N) dual coefficients η = M⁻¹ t
    loo: np.ndarray  # (A, N) leave-one-out predictions Ŷ


@dataclass(frozen=True)
class _Hat:
    """What the labelled rows' LOO needs from the system ``A(θ) = ΦᵀΩΦ + I/2C`` at θ.

    ``lev`` (B,): ``φ_iᵀ A⁻¹ φ_i``; ``fitted`` (B, M·N): ``Φ_l A⁻¹ Φᵀ S_j`` per source j (the fit
    to source j's soft labels alone); ``d_lev`` (K, B) and ``d_fitted`` (K, B, M·N): their
    derivatives with respect to θ_k.
    """

    lev: np.ndarray
    fitted: np.ndarray
    d_lev: np.ndarray
    d_fitted: np.ndarray


def _rows(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``a[rows]`` for a boolean ``rows`` (L,), without a copy when every row is taken."""
    return a if rows.all() else a[rows]


def _loo_prediction(
    fitted: np.ndarray, lev: np.ndarray, u: np.ndarray, omega: float | np.ndarray
) -> np.ndarray:
    """Leave-one-out predictions ``(f − h u) / (1 − ω h)`` (B, K) of rows with fits ``fitted``
    (B, K), leverages ``h = φᵀA⁻¹φ`` (B,), weighted targets ``u = ω t`` (B, K), weights ω (B,)."""
    return (fitted - lev[:, None] * u) / (1.0 - omega * lev)[:, None]


class _PrimalHat:
    """The system from the features Φ (L, p) in feature space: ``A(θ) = Σ_k θ_k Φ_kᵀΦ_k + I/2C``
    with the rows' groups k, each group's Gram part formed once; every θ costs a (p, p) Cholesky
    plus work on the labelled rows."""

    def __init__(
        self, features: np.ndarray, soft: np.ndarray, groups: list[np.ndarray], ridge: float
    ) -> None:
        self.features, self.ridge = features, ridge
        parts = [_rows(features, rows) for rows in groups]
        self.x_l = parts[0]
        self.grams = np.stack([x.T @ x for x in parts])  # (K, p, p)
        self.rhs = features.T @ soft.reshape(len(soft), -1)  # (p, M·N): Φᵀ S_j

    def _whitener(self, theta: np.ndarray) -> np.ndarray:
        """R (p, p) with ``R Rᵀ = A(θ)⁻¹``."""
        a = np.tensordot(theta, self.grams, 1) + self.ridge * np.eye(self.grams.shape[1])
        return solve_triangular(cholesky(a, lower=True), np.eye(len(a)), lower=True).T

    def hat(self, theta: np.ndarray) -> _Hat:
        r = self._whitener(theta)
        z = self.x_l @ r  # (B, p): φ_iᵀ R
        coef = r.T @ self.rhs
        d_lev, d_fitted = [], []
        for gram in self.grams:  # ∂A⁻¹/∂θ_k = −A⁻¹ G_k A⁻¹
            zs = z @ (r.T @ gram @ r)
            d_lev.append(-np.einsum("ip,ip->i", zs, z))
            d_fitted.append(-(zs @ coef))
        lev = np.einsum("ip,ip->i", z, z)
        return _Hat(lev, z @ coef, np.stack(d_lev), np.stack(d_fitted))

    def fit(
        self, theta: np.ndarray, active: np.ndarray, omega: np.ndarray, u: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """η = 2C (u − ω f) and the LOO predictions, (A, N), of the active rows from their weights
        ω (A,) and weighted targets u = ω t (A, N)."""
        r = self._whitener(theta)
        x = _rows(self.features, active)
        z = x @ r
        fitted = z @ (r.T @ (x.T @ u))
        lev = np.einsum("ip,ip->i", z, z)
        return (u - omega[:, None] * fitted) / self.ridge, _loo_prediction(fitted, lev, u, omega)


class _DualHat:
    """The system from the kernel K (L, L), reduced to the labelled rows l by a Schur complement
    over the unlabelled rows u (weight β): with ``K_uu = V Λ Vᵀ`` (computed once), the labelled
    rows see ``T(β) = Φ_l B⁻¹ Φ_lᵀ = (K_ll − β K_lu V (βΛ + 1/2C)⁻¹ Vᵀ K_ul) · 2C`` and every θ
    costs O(U·B² + U·M·N·B + B³)."""

    def __init__(
        self, kernel: np.ndarray, soft: np.ndarray, groups: list[np.ndarray], ridge: float
    ) -> None:
        self.kernel, self.ridge = kernel, ridge
        lab = groups[0]
        unl = groups[1] if len(groups) > 1 else np.zeros_like(lab)
        eig, vecs = np.linalg.eigh(kernel[np.ix_(unl, unl)])
        self.eig = np.maximum(eig, 0.0)  # (U,)
        self.k_ll = kernel[np.ix_(lab, lab)]
        self.proj = vecs.T @ kernel[np.ix_(unl, lab)]  # (U, B): Vᵀ K_ul
        flat = soft.reshape(len(soft), -1)
        self.soft_u = vecs.T @ flat[unl]  # (U, M·N): Vᵀ S_u,j
        self.soft_l = flat[lab]  # (B, M·N)

    def hat(self, theta: np.ndarray) -> _Hat:
        alpha = theta[0]
        beta = theta[1] if theta.size > 1 else 0.0
        d = 1.0 / (beta * self.eig + self.ridge)  # (U,)
        t = (self.k_ll - beta * (self.proj.T * d) @ self.proj) / self.ridge
        r = self.proj.T @ (d[:, None] * self.soft_u)  # Φ_l B⁻¹ Φ_uᵀ S_u,j
        factor = cho_factor(np.eye(len(t)) + alpha * t)  # Φ_l A⁻¹ = (I + αT)⁻¹ Φ_l B⁻¹
        h = cho_solve(factor, t)  # H = Φ_l A⁻¹ Φ_lᵀ
        fitted = cho_solve(factor, t @ self.soft_l + r)
        d_lev, d_fitted = [-np.einsum("ik,ki->i", h, h)], [-(h @ fitted)]  # ∂H/∂α = −H²
        if theta.size > 1:  # ∂T/∂β = −Pᵀ d² P and ∂r/∂β = −Pᵀ Λ d² Vᵀ S_u, P = Vᵀ K_ul
            y = cho_solve(factor, self.proj.T)  # (B, U)
            d2 = d * d
            d_lev.append(-(y * y) @ d2)
            moved = self.proj @ (self.soft_l - alpha * fitted) + self.eig[:, None] * self.soft_u
            d_fitted.append(-(y @ (d2[:, None] * moved)))
        return _Hat(np.diag(h).copy(), fitted, np.stack(d_lev), np.stack(d_fitted))

    def fit(
        self, theta: np.ndarray, active: np.ndarray, omega: np.ndarray, u: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """η = M⁻¹ t and the LOO predictions t − η / diag(M⁻¹), (A, N), of the active rows from
        their weights ω (A,) (which imply θ) and weighted targets u = ω t (A, N)."""
        g = np.linalg.inv(self.kernel[np.ix_(active, active)] + np.diag(self.ridge / omega))
        g = (g + g.T) / 2
        t = u / omega[:, None]
        eta = g @ t
        return eta, t - eta / np.diag(g)[:, None]


class _LooProblem:
    """The LOO loss of the GDDA LS-SVM as a function of λ, with its analytic gradient.

    ``soft`` (L, M, N) from :func:`soft_label_tensor` (zero where masked), ``y_index`` (L,) class
    indices read on the ``labelled`` (L,) bool rows, ``c`` the regularisation C; ``features``
    (L, p) with the bias column appended (primal) or the kernel (L, L) (dual).
    """

    def __init__(
        self,
        soft: np.ndarray,
        y_index: np.ndarray,
        labelled: np.ndarray,
        c: float,
        *,
        kernel: np.ndarray | None = None,
        features: np.ndarray | None = None,
        loss: str = "log",
    ) -> None:
        self.soft, self.loss = soft, loss
        n_sources = soft.shape[1]
        self.labels = y_index[labelled]
        self.soft_l = soft[labelled].reshape(labelled.sum(), -1)  # (B, M·N)
        self.mask = np.ones(soft.shape[:2])
        self.mask[:, 0] = labelled
        groups, weight_of = [labelled], [np.ones(n_sources)]
        if n_sources > 1 and not labelled.all():  # without teachers unlabelled rows weigh 0
            groups.append(~labelled)
            weight_of.append(np.r_[0.0, np.ones(n_sources - 1)])
        self.weight_of = np.stack(weight_of)  # (K, M): θ = weight_of @ λ
        ridge = 1.0 / (2.0 * c)
        if kernel is not None:
            self.system: _PrimalHat | _DualHat = _DualHat(kernel, soft, groups, ridge)
        else:
            self.system = _PrimalHat(features, soft, groups, ridge)
        self._basis = functools.lru_cache(maxsize=8)(self._compute_basis)

    def _basis_at(self, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The basis at λ's system weights θ, rounded to 1e-12 so that simplex points whose sums
        differ by rounding share one factorisation."""
        return self._basis(tuple(np.round(self.weight_of @ lam, 12).tolist()))

    def _compute_basis(self, theta_key: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
        """μ (B, M, N) with ``Ŷ_l = Σ_j λ_j μ_j`` at θ, and ∂μ/∂θ (K, B, M, N)."""
        theta = np.asarray(theta_key)
        hat = self.system.hat(theta)
        mu = _loo_prediction(hat.fitted, hat.lev, self.soft_l, theta[0])
        d_den = -theta[0] * hat.d_lev  # ∂(1 − αh)/∂θ
        d_den[0] -= hat.lev
        d_mu = hat.d_fitted - hat.d_lev[..., None] * self.soft_l - mu * d_den[..., None]
        d_mu /= (1.0 - theta[0] * hat.lev)[:, None]
        shape = (len(mu), *self.soft.shape[1:])
        return mu.reshape(shape), d_mu.reshape(len(d_mu), *shape)

    def loo(self, lam: np.ndarray) -> np.ndarray:
        """LOO predictions of the labelled rows at ``lam`` (M,), (B, N)."""
        return np.einsum("imn,m->in", self._basis_at(lam)[0], lam)

    def solve(self, lam: np.ndarray) -> _Solution:
        """The fit at ``lam`` (M,): η and the LOO predictions of every active row (one solve on
        all of them; the search uses :meth:`loo`)."""
        omega = self.mask @ lam
        active = omega > _EPS_WEIGHT
        u = np.einsum("imn,m->in", self.soft[active], lam)
        eta, loo = self.system.fit(self.weight_of @ lam, active, omega[active], u)
        return _Solution(active, eta, loo)

    def _loss_and_dloss(self, loo: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean loss over the labelled rows and ∂loss/∂Ŷ, from ``loo`` (B, N)."""
        y = self.labels
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
        return self._loss_and_dloss(self.loo(lam))[0]

    def value_and_grad(self, lam: np.ndarray) -> tuple[float, np.ndarray]:
        """The LOO loss and its gradient ∂L/∂λ (M,), λ treated as free in the positive orthant.

        ``Ŷ = Σ_j λ_j μ_j(θ)`` with ``θ = weight_of @ λ``, so ``∂Ŷ/∂λ_j = μ_j + Σ_k weight_of[k, j]
        Σ_i λ_i ∂μ_i/∂θ_k``: on the simplex with every row labelled, the paper's eq. 9
        ``Σ_{i,n} μ_ijn (P_in − Y_in)`` plus a term that is the same for every j (the derivative
        of ω = Σλ), which the simplex projection ignores.
        """
        mu, d_mu = self._basis_at(lam)
        value, dloss = self._loss_and_dloss(np.einsum("imn,m->in", mu, lam))
        d_theta = np.einsum("in,kimn,m->k", dloss, d_mu, lam)
        return value, np.einsum("in,imn->m", dloss, mu) + self.weight_of.T @ d_theta


def _as_teacher_array(teacher_probas: Any, n_rows: int) -> np.ndarray:
    """Teachers' outputs as (L, M−1, N), from a list of (L, N) arrays or an (L, M−1, N)
    array (the array form is what cross-validation can slice by rows); (L, 0, 0) for None."""
    if teacher_probas is None:
        return np.zeros((n_rows, 0, 0))
    if isinstance(teacher_probas, np.ndarray) and teacher_probas.ndim in (2, 3):
        arr = np.asarray(teacher_probas, dtype=np.float64)
        arr = arr[:, None, :] if arr.ndim == 2 else arr  # one teacher given as (L, N)
    elif isinstance(teacher_probas, Sequence | np.ndarray):
        parts = [np.asarray(p, dtype=np.float64) for p in teacher_probas]
        if any(p.ndim != 2 for p in parts):
            raise ValueError(
                "teacher_probas must be a list of (n_samples, n_classes) arrays, got arrays of "
                f"shapes {[p.shape for p in parts]}"
            )
        arr = np.stack(parts, axis=1) if parts else np.zeros((n_rows, 0, 0))
    else:
        raise TypeError(f"teacher_probas must be a list of arrays, got {type(teacher_probas)}")
    if arr.shape[0] != n_rows:
        raise ValueError(
            f"teacher_probas has {arr.shape[0]} rows, X has {n_rows} (they must match)"
        )
    return arr


def _first_bad_row(bad: np.ndarray) -> tuple[int, int, str, int]:
    """Where ``bad`` (L, M−1) or (L, M−1, N) is first True: its row i and teacher j, the words
    ``"teacher_probas: teacher j (counted from 0), row i"``, and how many rows are bad."""
    row, teacher = (int(i) for i in np.argwhere(bad)[0][:2])
    count = int(bad.reshape(len(bad), -1).any(axis=1).sum())
    return row, teacher, f"teacher_probas: teacher {teacher} (counted from 0), row {row}", count


def _teacher_distributions(teachers: np.ndarray, outputs: str) -> np.ndarray:
    """The teachers' class probabilities (L, M−1, N) from their outputs ``teachers`` (L, M−1, N):
    checked to be finite, then softmaxed (``outputs="logits"``) or checked to be distributions
    (``"probabilities"``: non-negative, each row summing to 1 within 1e-4)."""
    if not np.all(np.isfinite(teachers)):
        _, _, where, count = _first_bad_row(~np.isfinite(teachers))
        raise ValueError(f"{where} holds NaN or infinity ({count} row(s) in all)")
    if outputs == "logits":
        return softmax(teachers, axis=2)
    hint = "; give teacher_outputs='logits' if these are logits"
    if np.any(teachers < 0):
        row, teacher, where, count = _first_bad_row(teachers < 0)
        raise ValueError(
            f"{where} holds {teachers[row, teacher].min():.6g}, expected probabilities >= 0 "
            f"({count} row(s) in all){hint}"
        )
    sums = teachers.sum(axis=2)
    off = np.abs(sums - 1.0) > _SUM_TOLERANCE
    if off.any():
        row, teacher, where, count = _first_bad_row(off)
        raise ValueError(
            f"{where} sums to {sums[row, teacher]:.6g}, expected 1 (within {_SUM_TOLERANCE:g}) "
            f"({count} row(s) in all){hint}"
        )
    return teachers


def _unlabelled_mask(unlabelled: Any, n_rows: int) -> np.ndarray:
    """The ``unlabelled`` fit parameter as a bool array (L,); no row unlabelled for None."""
    if unlabelled is None:
        return np.zeros(n_rows, dtype=bool)
    mask = np.asarray(unlabelled)
    if mask.dtype != bool or mask.shape != (n_rows,):
        raise ValueError(
            f"unlabelled must be a boolean mask of shape ({n_rows},), one entry per row of X "
            f"(True = unlabelled), got dtype {mask.dtype} and shape {mask.shape}"
        )
    return mask


def _fixed_weights(weights: Any, n_sources: int) -> np.ndarray:
    """``weights`` as a float array (M,), checked to lie on the simplex."""
    lam = np.asarray(weights, dtype=np.float64)
    if lam.shape != (n_sources,):
        raise ValueError(
            f"lambda_search holds {lam.size} weights, expected {n_sources} "
            "(the true labels, then one per teacher)"
        )
    if lam.min() < 0 or abs(lam.sum() - 1.0) > 1e-9:
        raise ValueError(f"lambda_search weights must be >= 0 and sum to 1, got {lam.tolist()}")
    return lam


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
    lambda_search : {"gradient", "grid"} or array-like (M,)
        Projected gradient descent from the best of the uniform λ and the simplex's M vertices
        (LOO loss), brute force over
        ``{0, 0.1, …, 1}^M ∩ simplex``, or fixed weights on the simplex (no search; e.g. to
        trace accuracy along a grid of λ).
    solver : {"auto", "dual", "primal"}
        ``"auto"`` takes the primal (hat matrix, d×d systems) for a linear kernel with fewer
        features than fitted rows, the dual (L×L systems) otherwise.
    max_iter : int
        Iterations of projected gradient descent.
    tol : float
        Stop when the λ step is shorter than ``tol`` (Euclidean norm).
    classes : array-like (N,) or None
        Every class label, distinct, in the order of the teachers' columns. A class may have no
        labelled row: the teachers then teach it alone (without teachers, the labelled rows
        must cover two classes at least). None: the sorted labels of the labelled rows, which
        must be two at least.
    teacher_outputs : {"probabilities", "logits"}
        What ``fit``'s ``teacher_probas`` hold: class probabilities (finite, non-negative, each
        row summing to 1 within 1e-4), or logits (finite), which are softmaxed over the classes.

    Attributes
    ----------
    classes_ : ndarray (N,)
        The class labels: ``classes`` as given, or the sorted labels of the labelled rows; the
        teachers' columns follow them.
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
        Gradient iterations run (1 for the grid or without teachers: one closed-form pass; 0
        for fixed weights).
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
        classes: Any = None,
        teacher_outputs: str = "probabilities",
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
        self.classes = classes
        self.teacher_outputs = teacher_outputs

    # -- helpers ---------------------------------------------------------------------------
    def _check_params(self) -> None:
        choices = {
            "kernel": ("linear", "rbf"),
            "loss": ("log", "hinge"),
            "solver": ("auto", "dual", "primal"),
            "teacher_outputs": ("probabilities", "logits"),
        }
        if isinstance(self.lambda_search, str):
            choices["lambda_search"] = ("gradient", "grid")
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        numbers = {"C": self.C, "intercept_scaling": self.intercept_scaling, "tol": self.tol}
        numbers |= {"max_iter": self.max_iter}
        if not isinstance(self.gamma, str):
            numbers["gamma"] = self.gamma
        for name, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, Real):
                raise ValueError(f"{name} must be a number, got {value!r}")
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
        self, x: np.ndarray, soft: np.ndarray, y_index: np.ndarray, labelled: np.ndarray
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
            features = self._augment(x)
            return _LooProblem(soft, y_index, labelled, self.C, features=features, loss=self.loss)
        kernel = self._kernel(x, x)
        return _LooProblem(soft, y_index, labelled, self.C, kernel=kernel, loss=self.loss)

    def _search_lambda(self, problem: _LooProblem, n_sources: int) -> tuple[np.ndarray, int]:
        if not isinstance(self.lambda_search, str):
            return _fixed_weights(self.lambda_search, n_sources), 0
        if n_sources == 1:
            return np.ones(1), 1
        if self.lambda_search == "grid":
            grid = simplex_grid(n_sources)
            values = [problem.value(lam) for lam in grid]
            return grid[int(np.argmin(values))], 1
        # start from the best of the uniform λ and the M vertices (each source alone): the LOO
        # loss is not convex in λ, and a vertex is where a single good source wins
        starts = [np.full(n_sources, 1.0 / n_sources), *np.eye(n_sources)]
        lam = min(starts, key=problem.value)
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

    def _classes_and_index(
        self, y: np.ndarray, labelled: np.ndarray, has_teachers: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """``classes_`` (N,) and the class index (L,) of every labelled row (0 on the others),
        from the labels ``y`` (L,), read on the ``labelled`` (L,) rows only."""
        if not labelled.any():
            raise ValueError(
                f"unlabelled marks all {len(y)} rows; at least one row must be labelled "
                "(λ minimises the leave-one-out loss over the labelled rows)"
            )
        labels = check_array(y[labelled], ensure_2d=False, dtype=None, input_name="y")
        check_classification_targets(labels)
        found = np.unique(labels)
        if self.classes is None:
            if found.size < 2:
                raise ValueError(
                    f"y holds one class ({found.tolist()[0]!r}) on its labelled rows, a "
                    "classifier needs at least 2: give classes (every label, e.g. classes=[0, 1, "
                    "2]) with teacher_probas, which teach the classes that have no labelled row"
                )
            classes = found
        else:
            classes = np.asarray(self.classes)
            if classes.ndim != 1 or classes.size < 2 or np.unique(classes).size != classes.size:
                raise ValueError(
                    f"classes must list at least 2 distinct labels, got {self.classes!r}"
                )
            unknown = found[~np.isin(found, classes)]
            if unknown.size:
                raise ValueError(
                    f"y holds labels {unknown.tolist()} on its labelled rows that are not in "
                    f"classes {classes.tolist()}"
                )
            if found.size < 2 and not has_teachers:
                raise ValueError(
                    f"y holds one class ({found.tolist()[0]!r}) on its labelled rows and no "
                    f"teacher_probas teach the others of classes {classes.tolist()}: give "
                    "teacher_probas, or label rows of a second class"
                )
        order = np.argsort(classes, kind="stable")  # classes may come in any order
        index = np.zeros(len(y), dtype=np.intp)
        index[labelled] = order[np.searchsorted(classes, labels, sorter=order)]
        return classes, index

    # -- estimator API -------------------------------------------------------------------------
    def fit(
        self, X: Any, y: Any, teacher_probas: Any = None, unlabelled: Any = None
    ) -> GDDAClassifier:
        """Fit the student and learn λ.

        Parameters
        ----------
        X : array-like (L, d)
            Target-domain features.
        y : array-like (L,)
            Class labels (any labels, −1 included); read on the labelled rows only.
        teacher_probas : list of M−1 arrays (L, N), or array (L, M−1, N), or None
            Source teachers' outputs over ``classes_`` (one (L, N) array = one teacher):
            probabilities, or logits with ``teacher_outputs="logits"``. None fits a plain LS-SVM
            on the labelled rows. Give the (L, M−1, N) array to ``GridSearchCV``/
            ``cross_validate``, which slice fit parameters by rows.
        unlabelled : array-like of bool (L,), or None
            True on the rows whose label is unknown: ``y`` is ignored there, and the row
            contributes the teachers' soft labels only (nothing without teachers). None: every
            row is labelled. Sliced by rows like ``teacher_probas``.

        Returns
        -------
        self
        """
        self._check_params()
        X = validate_data(self, X, dtype=np.float64)
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None"
            )
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        labelled = ~_unlabelled_mask(unlabelled, X.shape[0])
        teachers = _as_teacher_array(teacher_probas, X.shape[0])
        classes, y_index = self._classes_and_index(y, labelled, teachers.shape[1] > 0)
        n_classes = classes.size
        if teachers.shape[1] == 0:
            teachers = np.zeros((X.shape[0], 0, n_classes))
        elif teachers.shape[2] != n_classes:
            raise ValueError(
                f"teacher_probas have {teachers.shape[2]} columns, expected {n_classes}: one per "
                f"class of classes_ {classes.tolist()}"
            )
        teachers = _teacher_distributions(teachers, self.teacher_outputs)
        self.classes_ = classes
        soft, _ = soft_label_tensor(y_index, labelled, teachers, n_classes)
        problem = self._problem(X, soft, y_index, labelled)
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
