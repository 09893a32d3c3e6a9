"""GDDA-SVM (SPEC §1.6): closed-form LOO against explicit refits, the λ-gradient against finite
differences, λ on the simplex, gradient vs grid search, scikit-learn protocol, semi-supervision."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from crossdistill.methods import GDDAClassifier
from crossdistill.methods.gdda import (
    _LooProblem,
    project_simplex,
    simplex_grid,
    soft_label_tensor,
)

C = 0.7


def tiny_problem(teachers: int, unlabelled: int, seed: int = 0, n: int = 9, d: int = 3):
    """Random X (n, d), class indices with ``unlabelled`` rows set to −1, S and its mask."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = np.arange(n) % 3
    y[rng.permutation(n)[:unlabelled]] = -1
    probas = rng.dirichlet(np.ones(3), size=(n, teachers))
    soft, mask = soft_label_tensor(y, probas, 3)
    return x, y, soft, mask


def kernel_of(x: np.ndarray, a: np.ndarray, kind: str) -> np.ndarray:
    """The kernel with the bias feature (intercept_scaling = 1)."""
    return (x @ a.T if kind == "linear" else rbf_kernel(x, a, gamma=0.4)) + 1.0


def problem_of(x, y, soft, kind: str, loss: str = "log") -> _LooProblem:
    if kind == "primal":
        features = np.hstack([x, np.ones((len(x), 1))])
        return _LooProblem(soft, y, C, features=features, loss=loss)
    return _LooProblem(soft, y, C, kernel=kernel_of(x, x, kind), loss=loss)


def refit_without(x, soft, mask, lam, i: int, kind: str) -> np.ndarray:
    """Explicit refit on every row but ``i`` of ½αᵀKα + C Σ_ij λ_j m_ij (s_ijn − (Kα)_i)², whose
    stationarity is (I + 2C Ω K) α = 2C u; returns the prediction at x_i, (N,)."""
    keep = np.setdiff1d(np.arange(len(x)), [i])
    omega = mask[keep] @ lam
    u = np.einsum("imn,im,m->in", soft[keep], mask[keep], lam)
    k = kernel_of(x[keep], x[keep], "rbf" if kind == "rbf" else "linear")
    alpha = np.linalg.solve(np.eye(len(keep)) + 2 * C * omega[:, None] * k, 2 * C * u)
    return kernel_of(x[i : i + 1], x[keep], "rbf" if kind == "rbf" else "linear")[0] @ alpha


@pytest.mark.parametrize("kind", ["linear", "rbf", "primal"])
@pytest.mark.parametrize("teachers,unlabelled", [(0, 0), (0, 2), (2, 0), (2, 3), (2, 6)])
def test_closed_form_loo_equals_explicit_refits(kind: str, teachers: int, unlabelled: int) -> None:
    """Both closed forms: the fit's on every active row, the λ search's on the labelled rows only
    (with 6 unlabelled rows the linear K_uu is singular: rank d + 1 = 4)."""
    x, y, soft, mask = tiny_problem(teachers, unlabelled)
    lam = np.array([0.5, 0.3, 0.2])[: teachers + 1]
    lam = lam / lam.sum()
    problem = problem_of(x, y, soft, kind)
    sol = problem.solve(lam)
    active = np.flatnonzero(sol.active)
    assert len(active) == (len(x) - unlabelled if teachers == 0 else len(x))
    refits = np.stack([refit_without(x, soft, mask, lam, i, kind) for i in active])
    np.testing.assert_allclose(sol.loo, refits, rtol=0, atol=1e-8)
    labelled = y[active] >= 0
    np.testing.assert_allclose(problem.loo(lam), refits[labelled], rtol=0, atol=1e-8)
    np.testing.assert_allclose(problem.loo(lam), sol.loo[labelled], rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", ["linear", "rbf", "primal"])
def test_the_search_factorises_once_per_lambda0(kind: str) -> None:
    """On the simplex the system depends on λ only through λ_0, and not at all when every row is
    labelled: then one factorisation serves the whole 66-point grid and the LOO predictions are
    linear in λ; with unlabelled rows each of the 11 values of λ_0 needs its own."""
    grid = simplex_grid(3)
    for unlabelled, factorisations in ((0, 1), (4, 11)):
        x, y, soft, _ = tiny_problem(2, unlabelled, seed=4, n=12)
        problem = problem_of(x, y, soft, kind)
        loo = np.stack([problem.loo(lam) for lam in grid])  # (66, B, N)
        assert problem._basis.cache_info().misses == factorisations
        vertices = [problem.loo(lam) for lam in np.eye(3)]
        linear = np.einsum("gj,jin->gin", grid, vertices)
        assert np.allclose(loo, linear, rtol=0, atol=1e-12) == (unlabelled == 0)


def test_primal_and_dual_agree_on_a_tall_problem() -> None:
    x, y, soft, mask = tiny_problem(2, 4, seed=3, n=30, d=4)
    lam = np.array([0.2, 0.5, 0.3])
    primal = problem_of(x, y, soft, "primal").value_and_grad(lam)
    dual = problem_of(x, y, soft, "linear").value_and_grad(lam)
    np.testing.assert_allclose(primal[0], dual[0], rtol=1e-10)
    np.testing.assert_allclose(primal[1], dual[1], rtol=1e-8)


@pytest.mark.parametrize("unlabelled", [0, 5])
def test_estimator_primal_and_dual_solvers_agree(unlabelled: int) -> None:
    x, y, teachers = teacher_problem(seed=1)
    y = y.copy()
    y[:unlabelled] = -1
    primal = GDDAClassifier(solver="primal").fit(x, y, teachers)
    dual = GDDAClassifier(solver="dual").fit(x, y, teachers)
    np.testing.assert_allclose(primal.lambda_, dual.lambda_, atol=1e-8)
    np.testing.assert_allclose(primal.coef_, dual.coef_, atol=1e-8)
    np.testing.assert_allclose(primal.intercept_, dual.intercept_, atol=1e-8)
    np.testing.assert_allclose(primal.loo_loss_, dual.loo_loss_, rtol=1e-10)


def finite_difference(problem: _LooProblem, lam: np.ndarray, h: float = 1e-6) -> np.ndarray:
    grad = np.zeros_like(lam)
    for j in range(lam.size):
        step = np.zeros_like(lam)
        step[j] = h
        grad[j] = (problem.value(lam + step) - problem.value(lam - step)) / (2 * h)
    return grad


@pytest.mark.parametrize("kind", ["linear", "rbf", "primal"])
@pytest.mark.parametrize("loss", ["log", "hinge"])
@pytest.mark.parametrize("unlabelled", [0, 3, 8])
def test_lambda_gradient_matches_finite_differences(kind: str, loss: str, unlabelled: int) -> None:
    x, y, soft, mask = tiny_problem(2, unlabelled, seed=1, n=12)
    problem = problem_of(x, y, soft, kind, loss)
    lam = np.array([0.45, 0.35, 0.2])
    value, grad = problem.value_and_grad(lam)
    assert value == pytest.approx(problem.value(lam))
    assert value > 0  # the hinge is differentiable here: some margins are active, none tied
    np.testing.assert_allclose(grad, finite_difference(problem, lam), rtol=1e-5, atol=1e-9)


def test_gradient_is_the_papers_eq9_up_to_a_common_term() -> None:
    """All rows labelled: ∂L/∂λ_j − Σ_{i,n} μ_ijn (P_in − Y_in)/L is the same for every j."""
    x, y, soft, mask = tiny_problem(2, 0, seed=2, n=10)
    lam = np.array([0.3, 0.3, 0.4])
    _, grad = problem_of(x, y, soft, "rbf").value_and_grad(lam)
    g = np.linalg.inv(kernel_of(x, x, "rbf") + np.eye(len(x)) / (2 * C))
    mu = soft - np.einsum("ik,kjn->ijn", g, soft) / np.diag(g)[:, None, None]  # (L, M, N)
    loo = np.einsum("ijn,j->in", mu, lam)
    p = np.exp(loo) / np.exp(loo).sum(axis=1, keepdims=True)
    eq9 = np.einsum("ijn,in->j", mu, p - np.eye(3)[y]) / len(x)
    diff = grad - eq9
    np.testing.assert_allclose(diff, diff[0], atol=1e-10)


def test_simplex_helpers() -> None:
    grid = simplex_grid(3)
    assert grid.shape == (66, 3)
    np.testing.assert_allclose(grid.sum(axis=1), 1.0)
    np.testing.assert_allclose(project_simplex(np.array([0.2, 0.3, 0.5])), [0.2, 0.3, 0.5])
    np.testing.assert_allclose(project_simplex(np.array([2.0, 0.0, -1.0])), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(project_simplex(np.array([1.0, 1.0])), [0.5, 0.5])


def teacher_problem(seed: int = 0, n: int = 45):
    """Overlapping 3-class data whose given labels are 30 % noisy, a noise teacher and an
    informative teacher (soft labels of the clean class), (n, N) each."""
    rng = np.random.default_rng(seed)
    clean = np.arange(n) % 3
    x = rng.normal(size=(n, 4)) + 2.0 * np.eye(3, 4)[clean]
    informative = 0.1 + 0.7 * np.eye(3)[clean]
    noise = rng.dirichlet(np.ones(3), size=n)
    y = clean.copy()
    flip = rng.random(n) < 0.3
    y[flip] = rng.integers(0, 3, flip.sum())
    return x, y, [noise, informative]


@pytest.mark.parametrize("search", ["gradient", "grid"])
@pytest.mark.parametrize("loss", ["log", "hinge"])
def test_lambda_stays_on_the_simplex(search: str, loss: str) -> None:
    x, y, teachers = teacher_problem()
    y = y.copy()
    y[::4] = -1
    clf = GDDAClassifier(C=0.5, lambda_search=search, loss=loss).fit(x, y, teachers)
    assert clf.lambda_.shape == (3,)
    assert np.all(clf.lambda_ >= 0)
    assert clf.lambda_.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("loss", ["log", "hinge"])
@pytest.mark.parametrize("seed", [0, 2])
def test_gradient_search_reaches_the_grid_and_prefers_the_informative_teacher(
    kernel: str, loss: str, seed: int
) -> None:
    x, y, teachers = teacher_problem(seed=seed)
    params = {"C": 1.0, "kernel": kernel, "loss": loss}
    grid = GDDAClassifier(**params, lambda_search="grid").fit(x, y, teachers)
    grad = GDDAClassifier(**params, max_iter=300).fit(x, y, teachers)
    assert grad.loo_loss_ <= grid.loo_loss_ + 1e-4
    assert grad.lambda_[2] > grad.lambda_[1]  # informative (j = 2) over noise (j = 1)
    assert grid.lambda_[2] > grid.lambda_[1]


def test_without_teachers_is_a_plain_ls_svm() -> None:
    x, y, _ = teacher_problem()
    clf = GDDAClassifier(C=2.0).fit(x, y)
    np.testing.assert_array_equal(clf.lambda_, [1.0])
    # ridge regression on one-hot targets with the bias as a penalised constant feature
    xa = np.hstack([x, np.ones((len(x), 1))])
    w = np.linalg.solve(xa.T @ xa + np.eye(5) / (2 * 2.0), xa.T @ np.eye(3)[y])
    np.testing.assert_allclose(clf.coef_, w[:-1].T, atol=1e-10)
    np.testing.assert_allclose(clf.intercept_, w[-1], atol=1e-10)
    proba = clf.predict_proba(x)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.predict(x), clf.classes_[proba.argmax(axis=1)])


def test_check_estimator() -> None:
    check_estimator(
        GDDAClassifier(),
        expected_failed_checks={
            # This check fits binary labels [-1, 1]; -1 is scikit-learn's own marker for an
            # unlabelled row, which this semi-supervised estimator honours (scikit-learn exempts
            # LabelSpreading, LabelPropagation and SelfTrainingClassifier by name for the same
            # reason, in _choose_check_classifiers_labels).
            "check_classifiers_classes": "y = -1 marks an unlabelled row",
        },
    )


def test_pipeline_and_grid_search_with_teachers() -> None:
    x, y, teachers = teacher_problem(n=60)
    stacked = np.stack(teachers, axis=1)  # (L, M−1, N): sliced by the CV splits
    pipe = Pipeline([("scale", StandardScaler()), ("clf", GDDAClassifier())])
    pipe.fit(x, y, clf__teacher_probas=teachers)
    assert pipe.score(x, y) > 0.5
    search = GridSearchCV(pipe, {"clf__C": [0.1, 1.0]}, cv=3)
    search.fit(x, y, clf__teacher_probas=stacked)
    assert search.best_params_["clf__C"] in (0.1, 1.0)
    assert search.best_estimator_.named_steps["clf"].lambda_.shape == (3,)


def test_teacher_shapes_are_checked() -> None:
    x, y, teachers = teacher_problem()
    with pytest.raises(ValueError, match="rows"):
        GDDAClassifier().fit(x, y, [teachers[0][:-1]])
    with pytest.raises(ValueError, match="columns"):
        GDDAClassifier().fit(x, y, [teachers[0][:, :2]])
    one = GDDAClassifier().fit(x, y, teachers[1])
    np.testing.assert_array_equal(one.lambda_, GDDAClassifier().fit(x, y, [teachers[1]]).lambda_)
    with pytest.raises(ValueError, match="no labelled"):
        GDDAClassifier().fit(x, np.full(len(y), -1), teachers)


def test_unlabelled_rows_with_a_correct_teacher_improve_accuracy() -> None:
    """Two classes split by x₀ = 0; the 6 labelled rows (small C) suggest a boundary tilted
    towards x₁; 200 unlabelled rows carry a correct teacher's soft labels."""
    rng = np.random.default_rng(0)
    x_lab = np.array([[-0.3, 2.0], [-0.6, 2.5], [-0.4, -1.0], [0.3, -2.0], [0.6, -2.5], [0.4, 1.0]])
    y_lab = np.array([0, 0, 0, 1, 1, 1])
    x_unl = rng.normal(size=(200, 2)) * [1.0, 2.0]
    x_test = rng.normal(size=(500, 2)) * [1.0, 2.0]
    truth = (x_test[:, 0] > 0).astype(int)

    def teacher(x: np.ndarray) -> np.ndarray:
        return 0.05 + 0.9 * np.eye(2)[(x[:, 0] > 0).astype(int)]

    x_all = np.vstack([x_lab, x_unl])
    y_all = np.concatenate([y_lab, np.full(200, -1)])
    for loss in ("log", "hinge"):
        alone = GDDAClassifier(C=0.1, loss=loss).fit(x_lab, y_lab, [teacher(x_lab)])
        semi = GDDAClassifier(C=0.1, loss=loss).fit(x_all, y_all, [teacher(x_all)])
        assert semi.lambda_[1] > 0.5
        assert semi.loo_loss_ < alone.loo_loss_
        assert not np.allclose(semi.coef_, alone.coef_)
        acc_alone = np.mean(alone.predict(x_test) == truth)
        acc_semi = np.mean(semi.predict(x_test) == truth)
        assert acc_semi > 0.95
        assert acc_semi > acc_alone + 0.1


def test_fixed_weights_skip_the_search_and_match_the_grid() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3))
    y = (x[:, 0] > 0).astype(int)
    teachers = [rng.dirichlet(np.ones(2), size=40), np.eye(2)[y] * 0.8 + 0.1]
    grid = GDDAClassifier(lambda_search="grid").fit(x, y, teachers)
    fixed = GDDAClassifier(lambda_search=list(grid.lambda_)).fit(x, y, teachers)
    assert fixed.n_iter_ == 0
    np.testing.assert_array_equal(fixed.lambda_, grid.lambda_)
    assert fixed.loo_loss_ == pytest.approx(grid.loo_loss_, abs=1e-12)
    np.testing.assert_allclose(fixed.coef_, grid.coef_, atol=1e-12)
    with pytest.raises(ValueError, match="holds 2 weights, expected 3"):
        GDDAClassifier(lambda_search=[0.5, 0.5]).fit(x, y, teachers)
    with pytest.raises(ValueError, match="sum to 1"):
        GDDAClassifier(lambda_search=[0.5, 0.5, 0.5]).fit(x, y, teachers)
    with pytest.raises(ValueError, match="lambda_search must be one of"):
        GDDAClassifier(lambda_search="brute").fit(x, y, teachers)


def test_the_search_starts_at_the_best_vertex_when_it_beats_the_uniform_start() -> None:
    """One labelled row per class and a teacher that always names the next class: from the
    uniform λ, descent ends trusting the teacher; the labels-only vertex has a lower LOO loss,
    and the search starts there."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 5))
    y = rng.integers(0, 3, 40)
    x[np.arange(40), y] += 1.5
    y_semi = np.full(40, -1)
    labelled = np.concatenate([rng.choice(np.flatnonzero(y == c), 1) for c in range(3)])
    y_semi[labelled] = y[labelled]
    wrong = [np.eye(3)[(y + 1) % 3] * 0.85 + 0.05]
    learned = GDDAClassifier().fit(x, y_semi, wrong)
    labels_only = GDDAClassifier(lambda_search=[1.0, 0.0]).fit(x, y_semi, wrong)
    trusting = GDDAClassifier(lambda_search=[0.0, 1.0]).fit(x, y_semi, wrong)
    assert labels_only.loo_loss_ < trusting.loo_loss_ - 0.1
    np.testing.assert_allclose(learned.lambda_, [1.0, 0.0])
    assert learned.loo_loss_ == pytest.approx(labels_only.loo_loss_, abs=1e-12)
