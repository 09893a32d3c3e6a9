"""GDDA-SVM (SPEC §1.6): closed-form LOO against explicit refits, the λ-gradient against finite
differences, λ on the simplex, gradient vs grid search, scikit-learn protocol, semi-supervision."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.base import clone
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
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
    """Random X (n, d), class indices, the labelled rows (all but ``unlabelled`` of them), S and
    its mask."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = np.arange(n) % 3
    labelled = np.ones(n, dtype=bool)
    labelled[rng.permutation(n)[:unlabelled]] = False
    probas = rng.dirichlet(np.ones(3), size=(n, teachers))
    soft, mask = soft_label_tensor(y, labelled, probas, 3)
    return x, y, labelled, soft, mask


def kernel_of(x: np.ndarray, a: np.ndarray, kind: str) -> np.ndarray:
    """The kernel with the bias feature (intercept_scaling = 1)."""
    return (x @ a.T if kind == "linear" else rbf_kernel(x, a, gamma=0.4)) + 1.0


def problem_of(x, y, labelled, soft, kind: str, loss: str = "log") -> _LooProblem:
    if kind == "primal":
        features = np.hstack([x, np.ones((len(x), 1))])
        return _LooProblem(soft, y, labelled, C, features=features, loss=loss)
    return _LooProblem(soft, y, labelled, C, kernel=kernel_of(x, x, kind), loss=loss)


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
    x, y, labelled, soft, mask = tiny_problem(teachers, unlabelled)
    lam = np.array([0.5, 0.3, 0.2])[: teachers + 1]
    lam = lam / lam.sum()
    problem = problem_of(x, y, labelled, soft, kind)
    sol = problem.solve(lam)
    active = np.flatnonzero(sol.active)
    assert len(active) == (len(x) - unlabelled if teachers == 0 else len(x))
    refits = np.stack([refit_without(x, soft, mask, lam, i, kind) for i in active])
    np.testing.assert_allclose(sol.loo, refits, rtol=0, atol=1e-8)
    kept = labelled[active]
    np.testing.assert_allclose(problem.loo(lam), refits[kept], rtol=0, atol=1e-8)
    np.testing.assert_allclose(problem.loo(lam), sol.loo[kept], rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", ["linear", "rbf", "primal"])
def test_the_search_factorises_once_per_lambda0(kind: str) -> None:
    """On the simplex the system depends on λ only through λ_0, and not at all when every row is
    labelled: then one factorisation serves the whole 66-point grid and the LOO predictions are
    linear in λ; with unlabelled rows each of the 11 values of λ_0 needs its own."""
    grid = simplex_grid(3)
    for unlabelled, factorisations in ((0, 1), (4, 11)):
        x, y, labelled, soft, _ = tiny_problem(2, unlabelled, seed=4, n=12)
        problem = problem_of(x, y, labelled, soft, kind)
        loo = np.stack([problem.loo(lam) for lam in grid])  # (66, B, N)
        assert problem._basis.cache_info().misses == factorisations
        vertices = [problem.loo(lam) for lam in np.eye(3)]
        linear = np.einsum("gj,jin->gin", grid, vertices)
        assert np.allclose(loo, linear, rtol=0, atol=1e-12) == (unlabelled == 0)


def test_primal_and_dual_agree_on_a_tall_problem() -> None:
    x, y, labelled, soft, _ = tiny_problem(2, 4, seed=3, n=30, d=4)
    lam = np.array([0.2, 0.5, 0.3])
    primal = problem_of(x, y, labelled, soft, "primal").value_and_grad(lam)
    dual = problem_of(x, y, labelled, soft, "linear").value_and_grad(lam)
    np.testing.assert_allclose(primal[0], dual[0], rtol=1e-10)
    np.testing.assert_allclose(primal[1], dual[1], rtol=1e-8)


@pytest.mark.parametrize("unlabelled", [0, 5])
def test_estimator_primal_and_dual_solvers_agree(unlabelled: int) -> None:
    x, y, teachers = teacher_problem(seed=1)
    mask = np.arange(len(y)) < unlabelled
    primal = GDDAClassifier(solver="primal").fit(x, y, teachers, unlabelled=mask)
    dual = GDDAClassifier(solver="dual").fit(x, y, teachers, unlabelled=mask)
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
    x, y, labelled, soft, _ = tiny_problem(2, unlabelled, seed=1, n=12)
    problem = problem_of(x, y, labelled, soft, kind, loss)
    lam = np.array([0.45, 0.35, 0.2])
    value, grad = problem.value_and_grad(lam)
    assert value == pytest.approx(problem.value(lam))
    assert value > 0  # the hinge is differentiable here: some margins are active, none tied
    np.testing.assert_allclose(grad, finite_difference(problem, lam), rtol=1e-5, atol=1e-9)


def test_gradient_is_the_papers_eq9_up_to_a_common_term() -> None:
    """All rows labelled: ∂L/∂λ_j − Σ_{i,n} μ_ijn (P_in − Y_in)/L is the same for every j."""
    x, y, labelled, soft, _ = tiny_problem(2, 0, seed=2, n=10)
    lam = np.array([0.3, 0.3, 0.4])
    _, grad = problem_of(x, y, labelled, soft, "rbf").value_and_grad(lam)
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
    mask = np.arange(len(y)) % 4 == 0
    clf = GDDAClassifier(C=0.5, lambda_search=search, loss=loss)
    clf.fit(x, y, teachers, unlabelled=mask)
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
    check_estimator(GDDAClassifier())


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
    with pytest.raises(ValueError, match="unlabelled marks all 45 rows"):
        GDDAClassifier().fit(x, y, teachers, unlabelled=np.ones(len(y), dtype=bool))


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
    y_all = np.concatenate([y_lab, np.zeros(200, dtype=int)])  # ignored where unlabelled
    unlabelled = np.arange(len(y_all)) >= len(y_lab)
    for loss in ("log", "hinge"):
        alone = GDDAClassifier(C=0.1, loss=loss).fit(x_lab, y_lab, [teacher(x_lab)])
        semi = GDDAClassifier(C=0.1, loss=loss)
        semi.fit(x_all, y_all, [teacher(x_all)], unlabelled=unlabelled)
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
    labelled = np.concatenate([rng.choice(np.flatnonzero(y == c), 1) for c in range(3)])
    unlabelled = np.ones(40, dtype=bool)
    unlabelled[labelled] = False
    wrong = [np.eye(3)[(y + 1) % 3] * 0.85 + 0.05]
    learned = GDDAClassifier().fit(x, y, wrong, unlabelled=unlabelled)
    labels_only = GDDAClassifier(lambda_search=[1.0, 0.0]).fit(x, y, wrong, unlabelled=unlabelled)
    trusting = GDDAClassifier(lambda_search=[0.0, 1.0]).fit(x, y, wrong, unlabelled=unlabelled)
    assert labels_only.loo_loss_ < trusting.loo_loss_ - 0.1
    np.testing.assert_allclose(learned.lambda_, [1.0, 0.0])
    assert learned.loo_loss_ == pytest.approx(labels_only.loo_loss_, abs=1e-12)


def test_minus_one_and_plus_one_are_two_classes() -> None:
    """−1 is an ordinary label: y ∈ {−1, +1} is a binary problem, with or without teachers."""
    x, y, teachers = teacher_problem()
    clean = np.arange(len(y)) % 3
    signs = np.where(clean == 0, -1, 1)
    teacher = np.stack([teachers[1][:, 0], teachers[1][:, 1:].sum(axis=1)], axis=1)  # (L, 2)
    for probas in (None, [teacher]):
        clf = GDDAClassifier().fit(x, signs, probas)
        np.testing.assert_array_equal(clf.classes_, [-1, 1])
        assert clf.lambda_.shape == (1 if probas is None else 2,)
        assert clf.score(x, signs) > 0.8  # chance: 2/3
        np.testing.assert_array_equal(clf.predict(x), np.where(clf.decision_function(x) > 0, 1, -1))


def test_labels_of_unlabelled_rows_are_ignored() -> None:
    x, y, teachers = teacher_problem()
    unlabelled = np.arange(len(y)) % 3 == 1
    reference = GDDAClassifier().fit(x, y, teachers, unlabelled=unlabelled)
    garbage = np.where(unlabelled, np.nan, y)  # NaN, or a label outside classes_, is not read
    for y_unl in (garbage, np.where(unlabelled, 99, y)):
        clf = GDDAClassifier().fit(x, y_unl, teachers, unlabelled=unlabelled)
        np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
        np.testing.assert_array_equal(clf.lambda_, reference.lambda_)
        np.testing.assert_array_equal(clf.coef_, reference.coef_)
    # the mask matters: the same rows labelled give another fit
    assert not np.allclose(GDDAClassifier().fit(x, y, teachers).coef_, reference.coef_)


def test_one_labelled_class_needs_classes_and_teachers() -> None:
    """Only class 0 is labelled: refused without ``classes`` or without teachers; with both, the
    teachers teach classes 1 and 2, which the student then predicts."""
    x, _, teachers = teacher_problem()
    clean = np.arange(len(x)) % 3
    unlabelled = clean != 0
    with pytest.raises(ValueError, match=r"y holds one class \(0\) .* give classes"):
        GDDAClassifier().fit(x, clean, teachers, unlabelled=unlabelled)
    with pytest.raises(ValueError, match=r"one class \(0\) .* no teacher_probas teach the others"):
        GDDAClassifier(classes=[0, 1, 2]).fit(x, clean, unlabelled=unlabelled)
    clf = GDDAClassifier(classes=[0, 1, 2], lambda_search=[0.3, 0.0, 0.7])
    clf.fit(x, clean, teachers, unlabelled=unlabelled)
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.predict_proba(x).shape == (len(x), 3)
    assert np.mean(clf.predict(x)[unlabelled] == clean[unlabelled]) > 0.8  # no label: 0
    searched = GDDAClassifier(classes=[0, 1, 2]).fit(x, clean, teachers, unlabelled=unlabelled)
    np.testing.assert_array_equal(searched.classes_, [0, 1, 2])


def test_a_class_without_labelled_rows_is_taught_by_the_teachers_in_the_order_of_classes() -> None:
    x, _, teachers = teacher_problem()
    clean = np.arange(len(x)) % 3
    unlabelled = clean == 2
    settings = {"lambda_search": [0.3, 0.0, 0.7]}
    clf = GDDAClassifier(classes=[0, 1, 2], **settings)
    clf.fit(x, clean, teachers, unlabelled=unlabelled)
    assert np.mean(clf.predict(x)[unlabelled] == 2) > 0.8
    # classes in another order, the teachers' columns following it: the same classifier
    order = [2, 0, 1]
    shuffled = GDDAClassifier(classes=order, **settings)
    shuffled.fit(x, clean, [t[:, order] for t in teachers], unlabelled=unlabelled)
    np.testing.assert_array_equal(shuffled.classes_, order)
    np.testing.assert_array_equal(shuffled.predict(x), clf.predict(x))
    np.testing.assert_allclose(shuffled.predict_proba(x), clf.predict_proba(x)[:, order])


def test_classes_and_the_unlabelled_mask_are_checked() -> None:
    x, y, teachers = teacher_problem()
    with pytest.raises(ValueError, match=r"classes must list at least 2 distinct labels"):
        GDDAClassifier(classes=[0, 1, 1, 2]).fit(x, y, teachers)
    with pytest.raises(ValueError, match=r"classes must list at least 2 distinct labels"):
        GDDAClassifier(classes=[0]).fit(x, y, teachers)
    with pytest.raises(ValueError, match=r"labels \[2\] on its labelled rows that are not in"):
        GDDAClassifier(classes=[0, 1]).fit(x, y, teachers)
    with pytest.raises(ValueError, match=r"have 3 columns, expected 4: one per class"):
        GDDAClassifier(classes=[0, 1, 2, 3]).fit(x, y, teachers)
    with pytest.raises(ValueError, match=r"unlabelled must be a boolean mask .* dtype int64"):
        GDDAClassifier().fit(x, y, teachers, unlabelled=(y == 0).astype(np.int64))
    with pytest.raises(ValueError, match=r"unlabelled must be a boolean mask of shape \(45,\)"):
        GDDAClassifier().fit(x, y, teachers, unlabelled=np.zeros(44, dtype=bool))
    with pytest.raises(ValueError, match="teacher_outputs must be one of"):
        GDDAClassifier(teacher_outputs="probas").fit(x, y, teachers)


@pytest.mark.parametrize(
    "row,message",
    [
        ([-0.2, 0.6, 0.6], r"row 7 holds -0.2, expected probabilities >= 0"),
        ([np.nan, 0.5, 0.5], r"row 7 holds NaN or infinity"),
        ([np.inf, 0.0, 0.0], r"row 7 holds NaN or infinity"),
        ([0.5, 0.3, 0.1], r"row 7 sums to 0.9, expected 1 \(within 0.0001\)"),
    ],
)
def test_teacher_probabilities_are_checked(row: list[float], message: str) -> None:
    x, y, teachers = teacher_problem()
    bad = teachers[1].copy()
    bad[7] = row
    for given in ([teachers[0], bad], np.stack([teachers[0], bad], axis=1)):
        with pytest.raises(ValueError, match=r"teacher_probas: teacher 1 .*" + message):
            GDDAClassifier().fit(x, y, given)
    bad[7] = teachers[1][7] + [5e-5, 0, 0]  # within the tolerance
    GDDAClassifier().fit(x, y, [teachers[0], bad])


def test_logits_give_the_fit_of_their_softmax() -> None:
    x, y, _ = teacher_problem()
    rng = np.random.default_rng(3)
    logits = 3 * rng.normal(size=(len(x), 2, 3)) + 4 * np.eye(3)[np.arange(len(x)) % 3][:, None]
    unlabelled = np.arange(len(x)) % 2 == 0
    with pytest.raises(ValueError, match="give teacher_outputs='logits'"):
        GDDAClassifier().fit(x, y, logits, unlabelled=unlabelled)
    from_logits = GDDAClassifier(teacher_outputs="logits").fit(x, y, logits, unlabelled=unlabelled)
    from_probas = GDDAClassifier().fit(x, y, softmax(logits, axis=2), unlabelled=unlabelled)
    assert from_logits.n_iter_ > 1
    np.testing.assert_array_equal(from_logits.lambda_, from_probas.lambda_)
    np.testing.assert_array_equal(from_logits.coef_, from_probas.coef_)
    assert from_logits.loo_loss_ == from_probas.loo_loss_


def test_the_unlabelled_mask_routes_through_pipeline_cross_validation_and_grid_search() -> None:
    """y holds 99, no class, on the unlabelled rows: any fit that missed its slice of the mask
    would refuse it; each fold's fit is the fit on its training rows."""
    x, y, teachers = teacher_problem(n=48)
    stacked = np.stack(teachers, axis=1)
    unlabelled = np.arange(len(y)) % 2 == 1
    y_semi = np.where(unlabelled, 99, y)
    pipe = Pipeline([("scale", StandardScaler()), ("clf", GDDAClassifier(classes=[0, 1, 2]))])
    params = {"clf__teacher_probas": stacked, "clf__unlabelled": unlabelled}
    folds = KFold(3)
    cv = cross_validate(pipe, x, y_semi, cv=folds, params=params, return_estimator=True)
    for (train, _), fitted in zip(folds.split(x), cv["estimator"], strict=True):
        alone = clone(pipe).fit(
            x[train],
            y_semi[train],
            clf__teacher_probas=stacked[train],
            clf__unlabelled=unlabelled[train],
        )
        np.testing.assert_array_equal(fitted[-1].lambda_, alone[-1].lambda_)
        np.testing.assert_array_equal(fitted[-1].coef_, alone[-1].coef_)
    search = GridSearchCV(pipe, {"clf__C": [0.1, 1.0]}, cv=folds).fit(x, y_semi, **params)
    best = clone(pipe).set_params(**search.best_params_).fit(x, y_semi, **params)
    np.testing.assert_array_equal(search.best_estimator_[-1].coef_, best[-1].coef_)
    with pytest.raises(ValueError, match=r"labels \[99\]"):  # the fits above needed the mask
        clone(pipe).fit(x, y_semi, clf__teacher_probas=stacked)
