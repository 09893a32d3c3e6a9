"""Multi-teacher distillation through a shared latent (SPEC §1.7): the triplet loss, the merge of
class-subset teachers' soft labels, CA-MKD's weights, the latent autoencoder, and the kind end
to end on the embedded digits."""

from __future__ import annotations

import inspect
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from crossdistill.experiments import ConfigError, load_config, run_experiment
from crossdistill.experiments.config import LatentConfig
from crossdistill.experiments.outputs import read_csv
from crossdistill.losses import TripletLoss, class_triplets, triplet_loss
from crossdistill.methods.multiteacher import (
    LatentAlignment,
    LatentAutoencoder,
    MultiTeacherDistillation,
    confidence_weights,
    merge_soft_labels,
)
from crossdistill.training import cache as cache_module
from crossdistill.training import fit


def test_triplet_loss_is_the_hand_computation() -> None:
    anchor = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    positive = torch.tensor([[1.0, 0.0], [1.0, 2.0]])
    negative = torch.tensor([[0.0, 0.5], [4.0, 5.0]])
    # row 0: max(0, 1 + 1 − 0.25) = 1.75; row 1: max(0, 1 + 1 − 25) = 0
    assert triplet_loss(anchor, positive, negative, margin=1.0).item() == pytest.approx(1.75 / 2)
    assert TripletLoss(margin=2.0)(anchor, positive, negative).item() == pytest.approx(2.75 / 2)


def test_triplet_loss_is_zero_when_every_margin_is_met() -> None:
    anchor = torch.zeros(3, 4)
    positive = torch.full((3, 4), 0.1)  # ‖a − p‖² = 0.04
    negative = torch.ones(3, 4)  # ‖a − n‖² = 4
    assert triplet_loss(anchor, positive, negative, margin=3.9).item() == 0.0
    assert triplet_loss(anchor, positive, negative, margin=4.0).item() > 0.0


def test_a_batch_without_triplets_gives_zero_loss_with_a_gradient_not_nan() -> None:
    codes = torch.randn(4, 3, requires_grad=True)
    anchor, positive, negative = class_triplets(torch.arange(4))  # one row per class: none
    assert len(anchor) == 0
    loss = triplet_loss(codes[anchor], codes[positive], codes[negative])
    loss.backward()
    assert loss.item() == 0.0 and codes.grad is not None and codes.grad.abs().sum() == 0


def test_class_triplets_pair_each_anchor_with_its_class_and_another() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    anchor, positive, negative = class_triplets(labels, torch.Generator().manual_seed(0))
    assert anchor.tolist() == [0, 1, 2, 3, 4]  # class 2 has one row: it cannot anchor
    assert (labels[positive] == labels[anchor]).all() and (positive != anchor).all()
    assert (labels[negative] != labels[anchor]).all()
    assert all(len(t) == 0 for t in class_triplets(torch.tensor([3, 3])))


def test_merged_soft_labels_of_class_subset_teachers_are_distributions_over_all_classes() -> None:
    torch.manual_seed(0)
    classes = [torch.tensor([0, 1, 2, 3]), torch.tensor([3, 4, 5]), torch.tensor([5, 6, 7, 0])]
    probabilities = [torch.randn(6, len(c)).softmax(1) for c in classes]
    merged = merge_soft_labels(probabilities, classes, num_classes=9)
    assert merged.shape == (6, 9)
    assert (merged >= 0).all()
    torch.testing.assert_close(merged.sum(1), torch.ones(6))
    # class 8 is known to no teacher: it keeps the uniform start's share, 1/9
    torch.testing.assert_close(merged[:, 8], torch.full((6,), 1 / 9), atol=1e-6, rtol=0)


def test_merge_recovers_a_distribution_the_teachers_agree_on() -> None:
    truth = torch.tensor([[0.1, 0.2, 0.3, 0.15, 0.25]])
    classes = [torch.tensor([0, 1, 2]), torch.tensor([2, 3, 4]), torch.tensor([4, 0])]
    conditioned = [truth[:, c] / truth[:, c].sum(1, keepdim=True) for c in classes]
    merged = merge_soft_labels(conditioned, classes, num_classes=5)
    torch.testing.assert_close(merged, truth, atol=1e-4, rtol=0)


def test_merge_of_teachers_that_know_every_class_is_their_weighted_average() -> None:
    torch.manual_seed(1)
    everything = torch.arange(4)
    probabilities = [torch.randn(5, 4).softmax(1) for _ in range(3)]
    weights = torch.rand(5, 3)
    merged = merge_soft_labels(probabilities, [everything] * 3, 4, weights)
    expected = sum(w[:, None] * p for w, p in zip(weights.T, probabilities, strict=True))
    torch.testing.assert_close(merged, expected / weights.sum(1, keepdim=True))
    plain = merge_soft_labels(probabilities, [everything] * 3, 4)
    torch.testing.assert_close(plain, sum(probabilities) / 3)


def test_one_teacher_of_k_classes_gives_them_mass_k_over_c() -> None:
    p = torch.tensor([[0.5, 0.3, 0.2]])
    merged = merge_soft_labels([p], [torch.tensor([1, 2, 4])], num_classes=6)
    torch.testing.assert_close(merged[0, [1, 2, 4]], p[0] * 3 / 6)
    torch.testing.assert_close(merged[0, [0, 3, 5]], torch.full((3,), 1 / 6))


def _reference_merge(
    probabilities: list[torch.Tensor],
    classes: list[torch.Tensor],
    num_classes: int,
    steps: int = 5000,
) -> torch.Tensor:
    """The Vongkulbhisal et al. objective Σ_i Σ_{l∈L_i} −p_i(l) log(q_l / Σ_{k∈L_i} q_k),
    minimised row by row over q = softmax(u) by ``steps`` of L-BFGS on autograd's gradient
    (float64)."""
    return torch.stack(
        [
            _reference_row([p[row].double() for p in probabilities], classes, num_classes, steps)
            for row in range(len(probabilities[0]))
        ]
    )


def _reference_row(
    probabilities: list[torch.Tensor], classes: list[torch.Tensor], num_classes: int, steps: int
) -> torch.Tensor:
    u = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    solver = torch.optim.LBFGS(
        [u],
        max_iter=steps,
        tolerance_grad=1e-14,
        tolerance_change=1e-18,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        solver.zero_grad()
        q = u.softmax(0)
        value = sum(
            -(p * (q[known] / q[known].sum()).log()).sum()
            for p, known in zip(probabilities, classes, strict=True)
        )
        value.backward()
        return value

    solver.step(objective)
    return u.detach().softmax(0)


@pytest.mark.parametrize(
    "classes",
    [
        [range(0, 6), range(4, 10)],  # two halves that share two classes
        [range(0, 4), range(3, 7), range(6, 10)],  # a chain of three
        [range(0, 7), range(3, 10)],  # the first7 + last7 teachers' classes
    ],
    ids=["two-halves", "chain-of-three", "first7-last7"],
)
@pytest.mark.parametrize("sharpness", [1.0, 4.0])
def test_merge_without_a_teacher_of_every_class_is_the_objective_minimum(
    classes: list[range], sharpness: float
) -> None:
    generator = torch.Generator().manual_seed(len(classes))
    known = [torch.tensor(list(c)) for c in classes]
    probabilities = [
        (sharpness * torch.randn(12, len(c), generator=generator)).softmax(1) for c in known
    ]
    merged = merge_soft_labels(probabilities, known, num_classes=10)
    reference = _reference_merge(probabilities, known, 10)
    torch.testing.assert_close(merged.double(), reference, atol=1e-4, rtol=0)


def _merge_objective(
    merged: torch.Tensor, probabilities: list[torch.Tensor], classes: list[torch.Tensor]
) -> torch.Tensor:
    """Each row's value of the objective `_reference_merge` minimises."""
    merged = merged.double()
    return sum(
        -(p.double() * (merged[:, k] / merged[:, k].sum(1, keepdim=True)).log()).sum(1)
        for p, k in zip(probabilities, classes, strict=True)
    )


def test_merge_converges_on_thousands_of_rows_solved_together() -> None:
    generator = torch.Generator().manual_seed(0)
    known = [torch.arange(0, 4), torch.arange(3, 7), torch.arange(6, 10)]
    probabilities = [(3 * torch.randn(5000, 4, generator=generator)).softmax(1) for _ in known]
    merged = merge_soft_labels(probabilities, known, num_classes=10)  # in two chunks
    torch.testing.assert_close(merged.sum(1), torch.ones(5000))
    rows = torch.randperm(5000, generator=generator)[:10]
    reference = _reference_merge([p[rows] for p in probabilities], known, 10)
    torch.testing.assert_close(merged[rows].double(), reference, atol=1e-4, rtol=0)


def test_merge_of_near_one_hot_teachers_reaches_the_objective_minimum() -> None:
    # teachers sure to 1e-20 leave the classes that link their sets with almost no mass: the
    # objective is then flat along the groups' relative mass, so only its value is compared
    generator = torch.Generator().manual_seed(0)
    known = [torch.arange(0, 4), torch.arange(3, 7), torch.arange(6, 10)]
    probabilities = [(20 * torch.randn(6, 4, generator=generator)).softmax(1) for _ in known]
    merged = merge_soft_labels(probabilities, known, num_classes=10)
    reference = _reference_merge(probabilities, known, 10, steps=500)
    ours = _merge_objective(merged, probabilities, known)
    theirs = _merge_objective(reference, probabilities, known)
    assert (ours <= theirs + 1e-6).all(), (ours - theirs).tolist()


def test_confidence_weights_are_ca_mkd_over_the_teachers_that_know_the_label() -> None:
    classes = [torch.arange(3), torch.arange(3), torch.tensor([1, 2])]
    probabilities = [
        torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.2, 0.6]]),
        torch.tensor([[0.4, 0.4, 0.2], [0.1, 0.8, 0.1]]),
        torch.tensor([[0.5, 0.5], [0.3, 0.7]]),
    ]
    labels = torch.tensor([0, 1])
    weights = confidence_weights(probabilities, classes, labels)
    torch.testing.assert_close(weights.sum(1), torch.ones(2))
    # row 0: teacher 3 does not know class 0; the others split by 1 − softmax(CE)
    ce = -torch.tensor([0.7, 0.4]).log()
    torch.testing.assert_close(weights[0, :2], 1 - ce.softmax(0))
    assert weights[0, 2] == 0
    ce = -torch.tensor([0.2, 0.8, 0.3]).log()
    torch.testing.assert_close(weights[1], (1 - ce.softmax(0)) / 2)
    # a label only one teacher knows gives it weight 1
    alone = confidence_weights(probabilities[2:], classes[2:], torch.tensor([1, 2]))
    torch.testing.assert_close(alone, torch.ones(2, 1))


def _class_subset_teacher(
    train_x: torch.Tensor, train_y: torch.Tensor, known: torch.Tensor
) -> nn.Module:
    """A linear softmax teacher trained on the rows of classes ``known`` (outputs in that order)."""
    rows = torch.isin(train_y, known)
    target = torch.searchsorted(known, train_y[rows])
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(train_x[0].numel(), len(known)))
    optimizer = torch.optim.Adam(teacher.parameters(), lr=0.01)
    for _ in range(150):
        optimizer.zero_grad()
        nn.functional.cross_entropy(teacher(train_x[rows]), target).backward()
        optimizer.step()
    return teacher


def test_confidence_weights_keep_first7_last7_rows_on_the_classes_their_teacher_knows(
    data_root: Path,
) -> None:
    from crossdistill.registries import datasets

    splits = datasets.build("fashion_mnist", small=6000, seed=0, data_dir=data_root)
    classes = [torch.arange(0, 7), torch.arange(3, 10)]
    test = splits.test
    teachers = [_class_subset_teacher(splits.small.x, splits.small.y, c) for c in classes]
    with torch.no_grad():
        probabilities = [teacher(test.x).softmax(1) for teacher in teachers]
    first = torch.isin(test.y, torch.arange(0, 3))  # only first7 knows these labels
    weights = confidence_weights(probabilities, classes, test.y)
    assert (weights[first] == 0.5).all()  # first7 alone cannot place classes 7–9
    merged = merge_soft_labels(probabilities, classes, 10, weights)
    off = merged[first][:, 7:].sum(1).mean()
    assert off <= 0.02, f"{float(off):.3f} of the mass of class 0–2 rows is on classes 7–9"
    # weight 0 for the teacher that lacks the label (the rule without the fallback): ~3/10
    unsafe = torch.tensor([1.0, 0.0]).repeat(int(first.sum()), 1)
    kept = [p[first] for p in probabilities]
    assert merge_soft_labels(kept, classes, 10, unsafe)[:, 7:].sum(1).mean() > 0.25


def _clustered(
    sizes: dict[str, int], rows: int = 120
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Features of different sizes per teacher, clustered by one of three classes."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(rows) % 3
    features = {}
    for name, size in sizes.items():
        centres = 3 * torch.randn(3, size, generator=generator)
        features[name] = centres[labels] + torch.randn(rows, size, generator=generator)
    return features, labels


def test_teachers_of_different_sizes_align_into_one_latent_of_the_configured_size() -> None:
    features, labels = _clustered({"small": 7, "wide": 40, "image": 12})
    features["image"] = features["image"].reshape(-1, 3, 2, 2)  # any shape, flattened
    torch.manual_seed(0)
    autoencoder = LatentAutoencoder(features, size=5, reduce=6, hidden=16, normalize=False)
    assert autoencoder(features).shape == (120, 5)
    assert [e[0].in_features for e in autoencoder.encoders.values()] == [6, 6, 6]
    columns = {name: f"features/{name}/h" for name in features}
    alignment = LatentAlignment(autoencoder, columns, margin=1.0, mining="random")
    batch = {"y": labels} | {columns[n]: f for n, f in features.items()}
    torch.manual_seed(1)
    before = alignment.forward_train(batch)[1]["triplet"].item()
    adam = {"name": "adam", "lr": 1e-2}
    history = fit(alignment, batch, epochs=60, batch_size=60, optimizer=adam)
    assert history[-1]["train_triplet"] < 0.2 * before
    assert history[-1]["train_reconstruction"] < history[0]["train_reconstruction"]
    # each teacher's code of a class lies nearer the other teachers' codes of that class
    with torch.no_grad():
        codes = autoencoder.codes(autoencoder.reduced(features))
    centres = torch.stack([codes[:, labels == c].mean((0, 1)) for c in range(3)])
    nearest = torch.cdist(codes.reshape(-1, 5), centres).argmin(1)
    assert (nearest == labels.repeat(3)).float().mean() > 0.95


def test_multi_teacher_distillation_names_its_losses_and_trains_its_projection() -> None:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    method = MultiTeacherDistillation(
        student,
        lam=0.5,
        temperature=2.0,
        latent_weight=0.3,
        layer="2",
        hidden_size=6,
        targets={"latent": 2},
    )
    assert method.columns == ("x", "y", "soft_labels", "latent")
    batch = {
        "x": torch.randn(5, 4),
        "y": torch.tensor([0, 1, 2, 0, 1]),
        "soft_labels": torch.full((5, 3), 1 / 3),
        "latent": torch.randn(5, 2),
    }
    output, losses = method.forward_train(batch)
    assert set(losses) == {"labels", "teachers", "latent"}
    logits = student(batch["x"])
    soft = torch.nn.functional.cross_entropy(logits / 2, batch["soft_labels"]) * 4 * 0.5
    torch.testing.assert_close(losses["teachers"], soft)
    sum(losses.values()).backward()
    assert method.projections["latent"].weight.grad.abs().sum() > 0
    assert MultiTeacherDistillation(student, lam=1.0).columns == ("x", "y")


def test_per_teacher_hints_match_each_target_through_its_own_projection() -> None:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    method = MultiTeacherDistillation(
        student, lam=1.0, latent_weight=2.0, layer="2", hidden_size=6, targets={"a": 2, "b": 3}
    )
    assert method.columns == ("x", "y", "a", "b")
    batch = {
        "x": torch.randn(5, 4),
        "y": torch.tensor([0, 1, 2, 0, 1]),
        "a": torch.randn(5, 2),
        "b": torch.randn(5, 3),
    }
    _, losses = method.forward_train(batch)
    hidden = student[:3](batch["x"])
    expected = [
        torch.nn.functional.mse_loss(method.projections[name](hidden), batch[name])
        for name in ("a", "b")
    ]
    torch.testing.assert_close(losses["latent"], 2.0 * (expected[0] + expected[1]) / 2)
    losses["latent"].backward()
    assert all(p.weight.grad.abs().sum() > 0 for p in method.projections.values())


def test_the_latent_classes_default_to_a_configs_latent_settings() -> None:
    """From Python and from a config, a latent is the same by default."""
    config = LatentConfig()

    def defaults(cls: type) -> dict[str, object]:
        return {
            name: p.default
            for name, p in inspect.signature(cls).parameters.items()
            if p.default is not inspect.Parameter.empty
        }

    assert defaults(LatentAutoencoder) == {
        "reduce": config.reduce,
        "hidden": config.hidden,
        "normalize": config.normalize,
    }
    assert defaults(LatentAlignment) == {
        "margin": config.margin,
        "triplet_weight": config.triplet_weight,
        "mining": config.mining,
    }


def test_normalised_codes_are_unit_vectors_and_semi_hard_mining_trains_them_apart() -> None:
    features, labels = _clustered({"a": 12, "b": 7})
    torch.manual_seed(0)
    autoencoder = LatentAutoencoder(features, size=4, reduce=5, hidden=16, normalize=True)
    codes = autoencoder.codes(autoencoder.reduced(features))
    torch.testing.assert_close(codes.norm(dim=2), torch.ones(2, len(labels)))
    alignment = LatentAlignment(
        autoencoder, {"a": "a", "b": "b"}, margin=0.2, triplet_weight=1.0, mining="semi_hard"
    )
    batch = {"y": labels, **features}
    before = alignment.forward_train(batch)[1]["triplet"].item()
    fit(alignment, batch, epochs=60, batch_size=60, optimizer={"name": "adam", "lr": 1e-2})
    assert alignment.forward_train(batch)[1]["triplet"].item() < 0.5 * before
    with pytest.raises(ValueError, match="mining"):
        LatentAlignment(autoencoder, {"a": "a", "b": "b"}, mining="hardest")


TINY = """
kind: multiteacher
name: tiny_multiteacher
data: {name: digits, small: 200, seed: 0}
teachers:
  first:
    model: {name: mlp, hidden: [16]}
    train: {epochs: 3, batch_size: 64}
    classes: [0, 1, 2, 3, 4, 5, 6]
    layer: "2"
  last:
    model: {name: mlp, hidden: [24, 12]}
    train: {epochs: 3, batch_size: 64}
    classes: [4, 5, 6, 7, 8, 9]
    layer: "4"
  few:
    model: {name: mlp, hidden: [20]}
    train: {epochs: 3, batch_size: 64}
    rows: 300
    transform: {name: gaussian_noise, variance: 0.01, seed: 3}
    layer: "2"
student:
  model: {name: mlp, hidden: [16]}
  layer: "2"
  train: {epochs: 3, batch_size: 32}
latent: {size: 4, reduce: 5, hidden: 8, train: {epochs: 2, batch_size: 64}}
validation: 50
seeds: [0, 1]
arms:
  no_teacher: {lam: 1.0}
  single_teacher_kd: {lam: 0.5, temperature: 2, teachers: best_one}
  multi_teacher_avg: {lam: [0.3, 0.7], temperature: 2}
  multi_teacher_confidence: {lam: 0.5, temperature: 2, weighting: confidence}
  latent_no_triplet: {lam: 0.5, temperature: 2, latent: reconstruction}
  latent_triplet: {lam: 0.5, temperature: 2, latent: triplet}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "multiteacher.yaml"
    path.write_text(text)
    return path


def test_multiteacher_runs_every_arm_and_each_teacher_once_over_the_students_data(
    tmp_path, monkeypatch
) -> None:
    passes: Counter = Counter()
    original = cache_module._teacher_pass

    def counted(teacher, seen, layers):
        passes[id(teacher), len(seen)] += 1
        return original(teacher, seen, layers)

    monkeypatch.setattr(cache_module, "_teacher_pass", counted)
    out = tmp_path / "run"
    table = run_experiment(load_config(_write(tmp_path, TINY)), out, progress=False)
    # three teachers, each once over Small (200 rows) and once over Test (397 rows)
    assert sorted(n for _, n in passes) == [200] * 3 + [397] * 3
    assert set(passes.values()) == {1}
    cells = {(row["arm"], row["metric"]): row for row in table}
    arms = (
        "no_teacher",
        "single_teacher_kd",
        "multi_teacher_avg",
        "multi_teacher_confidence",
        "latent_no_triplet",
        "latent_triplet",
    )
    for arm in arms:
        assert cells[arm, "accuracy"]["n"] == 2
        assert cells[arm, "parameters"]["mean"] == 64 * 16 + 16 + 16 * 10 + 10
    assert ("no_teacher", "teacher_parameters") not in cells
    assert cells["multi_teacher_avg", "teacher_parameters"]["mean"] == (
        (64 * 16 + 16 + 16 * 7 + 7)
        + (64 * 24 + 24 + 24 * 12 + 12 + 12 * 6 + 6)
        + (64 * 20 + 20 + 20 * 10 + 10)
    )
    for teacher in ("first", "last", "few"):
        assert 0 < cells[f"teacher {teacher}", "teacher_accuracy"]["mean"] <= 1
    choices = {r["arm"]: r for r in read_csv(out / "choices.csv")}
    assert choices["single_teacher_kd"]["teachers"] in ("first", "last", "few")
    assert choices["multi_teacher_avg"]["teachers"] == "first+last+few"
    assert float(choices["multi_teacher_avg"]["lam"]) in (0.3, 0.7)
    selection = read_csv(out / "selection.csv")
    assert {r["teachers"] for r in selection if r["arm"] == "single_teacher_kd"} == {
        "first",
        "last",
        "few",
    }
    latent = read_csv(out / "latent.csv")
    assert {(r["arm"], r["space"]) for r in latent} == {
        (a, s) for a in ("latent_no_triplet", "latent_triplet") for s in ("teachers", "student")
    }
    for name in ("accuracy", "cross_entropy", "latent_latent_triplet", "latent_latent_no_triplet"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 0
    # a rerun reads every unit and every teacher pass back: no teacher runs again
    passes.clear()
    again = run_experiment(load_config(_write(tmp_path, TINY)), out, progress=False)
    assert not passes and again == table


VIEWS = """
kind: multiteacher
name: tiny_views
data: {name: digits, small: 200, seed: 0}
teachers:
  top:
    model: {name: mlp, hidden: [16]}
    train: {epochs: 3, batch_size: 64}
    transform: {name: crop, top: 0, left: 0, height: 4, width: 8}
    classes: [0, 1, 2, 3, 4, 5, 6]
    layer: "2"
  bottom:
    model: {name: mlp, hidden: [12]}
    train: {epochs: 3, batch_size: 64}
    transform: {name: mask, top: 4}
    layer: "2"
student:
  model: {name: mlp, hidden: [16]}
  layer: "2"
  train: {epochs: 3, batch_size: 32}
latent: {size: 4, reduce: 5, hidden: 8, rows: 300, train: {epochs: 2, batch_size: 64}}
validation: 50
seeds: [0, 1]
baseline: multi_teacher_avg
arms:
  multi_teacher_avg: {lam: [0.3, 0.7], temperature: 2}
  hints: {lam: 0.5, temperature: 2, latent: hints, latent_weight: [0.5, 2]}
  latent_only: {lam: 1.0, latent: triplet, margin: [0.1, 0.5]}
"""


def test_views_hints_latent_only_and_paired_differences(tmp_path: Path) -> None:
    out = tmp_path / "run"
    table = run_experiment(load_config(_write(tmp_path, VIEWS)), out, progress=False)
    cells = {(row["arm"], row["metric"]): row for row in table}
    # the top teacher saw 4 × 8 crops: its first layer takes 32 inputs
    assert cells["teacher top", "teacher_parameters"]["mean"] == 32 * 16 + 16 + 16 * 7 + 7
    choices = {r["arm"]: r for r in read_csv(out / "choices.csv")}
    assert {arm: int(r["candidates"]) for arm, r in choices.items()} == {
        "multi_teacher_avg": 2,
        "hints": 2,
        "latent_only": 2,
    }
    assert float(choices["hints"]["latent_weight"]) in (0.5, 2.0)
    assert float(choices["latent_only"]["margin"]) in (0.1, 0.5)
    selection = read_csv(out / "selection.csv")
    assert {float(r["margin"]) for r in selection if r["arm"] == "latent_only"} == {0.1, 0.5}
    results = read_csv(out / "results.csv")
    accuracy = {
        (r["arm"], r["seed"]): float(r["value"]) for r in results if r["metric"] == "accuracy"
    }
    for arm in ("hints", "latent_only"):
        paired = [accuracy[arm, s] - accuracy["multi_teacher_avg", s] for s in ("0", "1")]
        cell = cells[arm, "accuracy − multi_teacher_avg"]
        assert cell["n"] == 2
        assert cell["mean"] == pytest.approx(sum(paired) / 2)
        assert 0 < cells[arm, "probe_accuracy"]["mean"] <= 1
    assert ("multi_teacher_avg", "accuracy − multi_teacher_avg") not in cells
    assert ("multi_teacher_avg", "probe_accuracy") not in cells
    # the latent was trained on 300 rows of Big, for each margin and seed
    saved = sorted(p.name for p in (out / "checkpoints" / "latent").iterdir())
    assert len(saved) == 2 * 2 and all("-big-" in name for name in saved)
    assert "linear probe" in (out / "table.md").read_text()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ("teachers.first.layer=9", "teachers.first.layer"),
        ("teachers.first.classes=[0,12]", "teachers.first.classes"),
        ("teachers.few.rows=5000", "teachers.few.rows"),
        ("arms.multi_teacher_avg.teachers=[first,nobody]", "arms.multi_teacher_avg.teachers"),
        ("student.layer=nope", "student.layer"),
        ("validation=200", "validation"),
        ("arms.multi_teacher_avg.margin=0.5", "arms.multi_teacher_avg.margin"),
        ("arms.latent_no_triplet.triplet_weight=2", "arms.latent_no_triplet.triplet_weight"),
        ("arms.no_teacher.latent_weight=1", "arms.no_teacher.latent_weight"),
        ("baseline=nobody", "baseline"),
        ("latent.rows=100000", "latent.rows"),
        (
            "teachers.few.transform={name: crop, top: 6, left: 0, height: 4, width: 8}",
            "teachers.few.transform",
        ),
    ],
)
def test_multiteacher_mistakes_name_their_field_before_anything_is_written(
    tmp_path, change, field
) -> None:
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        run_experiment(load_config(_write(tmp_path, TINY), [change]), out, progress=False)
    assert not out.exists()


def test_multiteacher_batched_and_one_by_one_seeds_give_the_same_table(tmp_path) -> None:
    path = _write(tmp_path, TINY)
    sweep = ["arms.single_teacher_kd.lam=[0.3,0.7]"]  # each teacher's soft labels, one stack
    batched = run_experiment(load_config(path, sweep), tmp_path / "batched", progress=False)
    single = run_experiment(
        load_config(path, [*sweep, "batched=false"]), tmp_path / "single", progress=False
    )
    assert [(r["arm"], r["metric"]) for r in batched] == [(r["arm"], r["metric"]) for r in single]
    for one, many in zip(single, batched, strict=True):
        assert many["mean"] == pytest.approx(one["mean"], abs=1e-6), (one["arm"], one["metric"])
    checkpoints = tmp_path / "batched" / "checkpoints"
    assert (checkpoints / "latent_triplet-seeds.pt").exists()
    assert sorted(p.name for p in (checkpoints / "selection").iterdir()) == [
        "multi_teacher_avg-sweep-seeds.pt",
        "single_teacher_kd-sweep-seeds.pt",
    ]
    selections = [read_csv(tmp_path / run / "selection.csv") for run in ("single", "batched")]
    assert len(selections[1]) == (2 + 3 * 2) * 2  # (λ) + (teacher, λ), each for 2 seeds
    for one, many in zip(*selections, strict=True):
        assert [many[k] for k in ("teachers", "lam", "seed")] == [
            one[k] for k in ("teachers", "lam", "seed")
        ]
        for metric in ("accuracy", "cross_entropy"):
            assert float(many[metric]) == pytest.approx(float(one[metric]), abs=1e-6)
