"""Distillation losses against hand computations (numpy, written out from SPEC §1.1–1.2)."""

import math

import numpy as np
import pytest
import torch

from crossdistill.losses import (
    KDLoss,
    MultiDomainLoss,
    RegressionDistillLoss,
    kd_loss,
    multidomain_loss,
    regression_distill_loss,
    semi_hard_triplets,
    task_loss,
    triplet_loss,
)

Z = [[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]]  # student logits
V = [[2.0, 1.0, 0.0], [1.0, 3.0, -1.0]]  # teacher logits
Y = [2, 0]


def softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def hand_kd(temperature: float, t2_scale: bool) -> float:
    p = softmax(np.array(V) / temperature)
    log_q = np.log(softmax(np.array(Z) / temperature))
    per_object = -(p * log_q).sum(axis=1)
    return per_object.mean() * (temperature**2 if t2_scale else 1.0)


def hand_ce() -> float:
    log_q = np.log(softmax(np.array(Z)))
    return -np.mean([log_q[i, y] for i, y in enumerate(Y)])


def t(a: list) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


def y() -> torch.Tensor:
    return torch.tensor(Y)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("t2_scale", [True, False])
def test_kd_loss_matches_hand_computation(temperature: float, t2_scale: bool) -> None:
    value = kd_loss(t(Z), t(V), temperature, t2_scale)
    assert value.item() == pytest.approx(hand_kd(temperature, t2_scale), rel=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 5.0, 20.0])
def test_kd_loss_with_an_unsoftened_student_is_lopez_paz_form(temperature: float) -> None:
    """−Σ softmax(v/T) · log softmax(z), times T²: the student's softmax is at T = 1."""
    p = softmax(np.array(V) / temperature)
    expected = -(p * np.log(softmax(np.array(Z)))).sum(axis=1).mean() * temperature**2
    value = kd_loss(t(Z), t(V), temperature, soften_student=False)
    assert value.item() == pytest.approx(expected, rel=1e-12)
    module = MultiDomainLoss(lam=0.25, temperature=temperature, soften_student=False)
    mixed = 0.25 * hand_ce() + 0.75 * expected
    assert module(t(Z), y(), t(V)).item() == pytest.approx(mixed, rel=1e-12)
    assert KDLoss(temperature, soften_student=False)(t(Z), y(), t(V)).item() == pytest.approx(
        expected, rel=1e-12
    )


def test_kd_loss_closed_form_with_uniform_student() -> None:
    # softmax of equal student logits is (1/2, 1/2) at any T, so −Σ p log q = log 2.
    student, teacher = t([[0.0, 0.0]]), t([[5.0, -1.0]])
    assert kd_loss(student, teacher, 3.0, t2_scale=False).item() == pytest.approx(math.log(2))
    assert kd_loss(student, teacher, 3.0, t2_scale=True).item() == pytest.approx(9 * math.log(2))


def test_kd_loss_is_smallest_when_student_equals_teacher() -> None:
    assert kd_loss(t(V), t(V), 2.0) < kd_loss(t(Z), t(V), 2.0)


def test_kd_loss_rejects_mismatched_shapes_and_bad_temperature() -> None:
    with pytest.raises(ValueError, match="teacher_logits"):
        kd_loss(t(Z), t(V)[:, :2])
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(t(Z), t(V), temperature=0.0)


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 1.0])
def test_multidomain_loss_matches_hand_mixture(lam: float) -> None:
    value = multidomain_loss(t(Z), y(), t(V), lam=lam, temperature=2.0, t2_scale=True)
    expected = lam * hand_ce() + (1 - lam) * hand_kd(2.0, True)
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_lam_one_is_plain_cross_entropy_and_ignores_the_teacher() -> None:
    without = multidomain_loss(t(Z), y(), None, lam=1.0)
    with_teacher = multidomain_loss(t(Z), y(), t(V), lam=1.0, temperature=5.0)
    assert without.item() == pytest.approx(hand_ce(), rel=1e-12)
    assert with_teacher.item() == without.item()


def test_lam_zero_is_the_kd_term() -> None:
    value = multidomain_loss(t(Z), y(), t(V), lam=0.0, temperature=3.0, t2_scale=False)
    assert value.item() == pytest.approx(hand_kd(3.0, False), rel=1e-12)


def test_regression_loss_matches_hand_computation() -> None:
    g = [[1.0, 2.0], [0.0, -1.0], [3.0, 0.5]]
    target = [[0.0, 2.5], [1.0, -1.0], [2.0, 0.0]]
    teacher = [[1.5, 2.0], [0.5, 0.0], [3.0, 1.5]]
    # ‖y − g‖² per object: 1 + 0.25, 1 + 0, 1 + 0.25 -> mean 3.5 / 3
    # ‖g − f∘φ‖² per object: 0.25 + 0, 0.25 + 1, 0 + 1 -> mean 2.5 / 3
    value = regression_distill_loss(t(g), t(target), t(teacher), lam=0.25)
    assert value.item() == pytest.approx(0.25 * 3.5 / 3 + 0.75 * 2.5 / 3, rel=1e-12)


def test_regression_loss_accepts_vector_outputs() -> None:
    g, target, teacher = t([1.0, 2.0]), t([0.0, 0.0]), t([1.0, 4.0])
    # hard: (1 + 4) / 2 = 2.5; soft: (0 + 4) / 2 = 2
    assert regression_distill_loss(g, target, teacher, lam=0.5).item() == pytest.approx(2.25)
    column = regression_distill_loss(g[:, None], target, teacher, lam=0.5)
    assert column.item() == pytest.approx(2.25)
    assert regression_distill_loss(g, target, None, lam=1.0).item() == pytest.approx(2.5)


def test_regression_loss_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="do not match"):
        regression_distill_loss(t([[1.0, 2.0]]), t([[1.0, 2.0, 3.0]]), lam=1.0)


@pytest.mark.parametrize("lam", [-0.1, 1.5])
def test_bad_lam_is_a_value_error_naming_it(lam: float) -> None:
    with pytest.raises(ValueError, match=rf"lam.*{lam}"):
        multidomain_loss(t(Z), y(), t(V), lam=lam)
    with pytest.raises(ValueError, match=rf"lam.*{lam}"):
        regression_distill_loss(t(Z), t(Z), t(V), lam=lam)
    with pytest.raises(ValueError, match="lam"):
        MultiDomainLoss(lam=lam)
    with pytest.raises(ValueError, match="lam"):
        RegressionDistillLoss(lam=lam)


def test_missing_teacher_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="teacher"):
        multidomain_loss(t(Z), y(), None, lam=0.5)
    with pytest.raises(ValueError, match="teacher"):
        regression_distill_loss(t(Z), t(Z), None, lam=0.0)
    with pytest.raises(ValueError, match="teacher"):
        KDLoss()(t(Z), y())


def test_modules_equal_functions_through_one_forward_signature() -> None:
    ignored_target = torch.zeros(0)
    assert KDLoss(2.0, False)(t(Z), ignored_target, t(V)).item() == pytest.approx(
        kd_loss(t(Z), t(V), 2.0, False).item(), rel=1e-12
    )
    assert MultiDomainLoss(0.3, 2.0, True)(t(Z), y(), t(V)).item() == pytest.approx(
        multidomain_loss(t(Z), y(), t(V), 0.3, 2.0, True).item(), rel=1e-12
    )
    assert RegressionDistillLoss(0.25)(t(Z), t(V), t(Z) * 2).item() == pytest.approx(
        regression_distill_loss(t(Z), t(V), t(Z) * 2, 0.25).item(), rel=1e-12
    )


def test_module_repr_shows_settings() -> None:
    assert "lam=0.3, temperature=2.0, t2_scale=False" in repr(MultiDomainLoss(0.3, 2.0, False))


def triplet_list(triplets: tuple[torch.Tensor, ...]) -> list[tuple[int, int, int]]:
    return list(zip(*(t.tolist() for t in triplets), strict=True))


def test_semi_hard_triplets_pick_the_hand_worked_negatives() -> None:
    # 1-D points: class 0 at 0, 1, 3 (rows 0–2); class 1 at 2, 5 (rows 3, 4). Squared distances.
    embeddings = t([[0.0], [1.0], [3.0], [2.0], [5.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    assert triplet_list(semi_hard_triplets(embeddings, labels)) == [
        (0, 1, 3),  # d(a,p) = 1; negatives at 4, 25: the nearest beyond 1 is row 3
        (0, 2, 4),  # d(a,p) = 9; only row 4 (25) is beyond
        (1, 0, 4),  # d(a,p) = 1; row 3 is at exactly 1 (not beyond), row 4 at 16
        (1, 2, 4),  # d(a,p) = 4; row 3 at 1, row 4 at 16
        (2, 0, 4),  # d(a,p) = 9; negatives at 1, 4: none beyond, so the farthest, row 4
        (2, 1, 4),  # d(a,p) = 4; row 4 at exactly 4 is not beyond: the farthest, row 4
        (3, 4, 0),  # d(a,p) = 9; negatives at 4, 1, 1: none beyond, so the farthest, row 0
        (4, 3, 1),  # d(a,p) = 9; negatives at 25, 16, 4: the nearest beyond 9 is row 1
    ]


def test_semi_hard_triplets_break_ties_to_the_lower_row() -> None:
    # Anchor 0 at 0 with its positive at 1: negatives at −2 and 2 are both 4 away (semi-hard).
    semi_hard = semi_hard_triplets(t([[0.0], [1.0], [-2.0], [2.0]]), torch.tensor([0, 0, 1, 1]))
    assert triplet_list(semi_hard)[0] == (0, 1, 2)
    # Anchor 0 at 0 with its positive at 3: negatives at −1 and 1, none beyond, tie at the top.
    fallback = semi_hard_triplets(t([[0.0], [3.0], [-1.0], [1.0]]), torch.tensor([0, 0, 1, 1]))
    assert triplet_list(fallback)[0] == (0, 1, 2)


def test_semi_hard_triplets_pair_each_class_with_another() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])  # class 2 has one row
    embeddings = torch.randn(len(labels), 3, generator=torch.Generator().manual_seed(0))
    anchor, positive, negative = semi_hard_triplets(embeddings, labels)
    assert len(anchor) == 3 * 2 + 2 * 1 + 0 + 4 * 3  # Σ n_c (n_c − 1) ordered same-class pairs
    assert len(set(zip(anchor.tolist(), positive.tolist(), strict=True))) == len(anchor)
    assert (anchor != positive).all()
    assert (labels[anchor] == labels[positive]).all()
    assert (labels[anchor] != labels[negative]).all()
    assert anchor.dtype == positive.dtype == negative.dtype == torch.long


def test_semi_hard_triplets_equal_a_brute_force_search() -> None:
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(30, 5, dtype=torch.float64, generator=generator)
    labels = torch.randint(0, 4, (30,), generator=generator)
    expected, fallbacks = [], 0
    for a in range(30):
        for p in range(30):
            if p == a or labels[p] != labels[a]:
                continue
            d_ap = (embeddings[a] - embeddings[p]).pow(2).sum().item()
            d_an = {
                n: (embeddings[a] - embeddings[n]).pow(2).sum().item()
                for n in range(30)
                if labels[n] != labels[a]
            }
            beyond = [n for n in d_an if d_an[n] > d_ap]
            if beyond:
                expected.append((a, p, min(beyond, key=d_an.get)))
            else:
                expected.append((a, p, max(d_an, key=d_an.get)))
                fallbacks += 1
    assert triplet_list(semi_hard_triplets(embeddings, labels)) == expected
    assert 0 < fallbacks < len(expected)  # both branches of the rule are exercised


@pytest.mark.parametrize("labels", [[4, 4, 4, 4], [0, 1, 2, 3]])
def test_semi_hard_triplets_none_without_a_class_pair(labels: list[int]) -> None:
    embeddings = torch.randn(4, 2, requires_grad=True)
    triplets = semi_hard_triplets(embeddings, torch.tensor(labels))
    assert all(len(index) == 0 for index in triplets)
    loss = triplet_loss(*(embeddings[index] for index in triplets))
    assert loss.item() == 0.0


def test_semi_hard_triplets_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match="embeddings"):
        semi_hard_triplets(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        semi_hard_triplets(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long))


def test_stacked_losses_are_each_models_own_batch_mean() -> None:
    """`kd_loss` and `task_loss` on (K, B, R): model k's loss as on its (B, R) alone."""
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    target, labelled = torch.randint(0, 4, (3, 5)), torch.rand(3, 5) > 0.4
    temperature = torch.tensor([1.0, 2.5, 4.0])
    for soften in (True, False):
        stacked = kd_loss(student, teacher, temperature, soften_student=soften)
        alone = [
            kd_loss(student[k], teacher[k], temperature[k], soften_student=soften) for k in range(3)
        ]
        assert stacked.shape == (3,) and torch.allclose(stacked, torch.stack(alone))
    for mask in (None, labelled):
        stacked = task_loss("classification", student, target, mask)
        alone = [
            task_loss("classification", student[k], target[k], None if mask is None else mask[k])
            for k in range(3)
        ]
        assert torch.allclose(stacked, torch.stack(alone))
