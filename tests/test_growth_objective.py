"""The growth objective of SPEC §1.5: the Hutchinson curvature estimate against an explicit
Hessian, the robust loss, the anchor on hand-made slots, the weights, and runs through `fit`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from crossdistill.data import ArrayData
from crossdistill.losses import (
    HessianNorm,
    RobustLoss,
    box_noise,
    hessian_norm,
    robust_loss,
    task_loss,
)
from crossdistill.methods import GrowthObjective, Supervised
from crossdistill.models import grow, placed
from crossdistill.registries import methods, models
from crossdistill.training import fit


def _explicit_hessian_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """‖H‖²_F of the cross-entropy in all of ``model``'s parameters, cross blocks included."""
    names = [name for name, _ in model.named_parameters()]

    def loss(*params: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, dict(zip(names, params, strict=True)), x), y)

    blocks = torch.autograd.functional.hessian(loss, tuple(model.parameters()))
    return float(sum(block.pow(2).sum() for row in blocks for block in row))


def test_hutchinson_matches_the_explicit_hessian_frobenius_norm() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4)).double()  # 92 weights
    x, y = 2 * torch.randn(32, 6, dtype=torch.float64), torch.randint(0, 4, (32,))
    exact = _explicit_hessian_norm(model, x, y)
    for samples, tolerance in ((300, 0.05), (4000, 0.01)):
        loss = F.cross_entropy(model(x), y)
        generator = torch.Generator().manual_seed(1)
        estimate = hessian_norm(
            loss, model.parameters(), samples, generator=generator, create_graph=False
        )
        assert not estimate.requires_grad
        assert float(estimate) == pytest.approx(exact, rel=tolerance)


def test_one_hutchinson_sample_has_a_spread_of_about_a_fifth() -> None:
    """What the default ``hessian_samples=1`` costs in accuracy: over 200 independent estimates
    of the tiny model's ‖H‖²_F, the relative standard deviation is 15–25 % with one sample and
    at most 7 % with 16 (the README quotes these); the mean is within 5 % (unbiased)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4)).double()
    x, y = 2 * torch.randn(32, 6, dtype=torch.float64), torch.randint(0, 4, (32,))
    exact = _explicit_hessian_norm(model, x, y)
    generator = torch.Generator().manual_seed(1)
    for samples, spread in ((1, (0.15, 0.25)), (16, (0.0, 0.07))):
        estimates = torch.tensor(
            [
                float(
                    hessian_norm(
                        F.cross_entropy(model(x), y),
                        model.parameters(),
                        samples,
                        generator=generator,
                        create_graph=False,
                    )
                )
                for _ in range(200)
            ]
        )
        assert spread[0] <= float(estimates.std() / exact) <= spread[1], samples
        assert float(estimates.mean()) == pytest.approx(exact, rel=0.05)


def test_hessian_norm_is_differentiable_like_a_finite_difference() -> None:
    x = torch.tensor([[1.0, -0.5, 0.3], [0.2, 0.8, -1.0], [-0.7, 0.1, 0.4]], dtype=torch.float64)

    def estimate(w: torch.Tensor) -> torch.Tensor:
        loss = torch.tanh(x @ w).pow(3).sum() + w.pow(4).sum()  # H depends on w
        return hessian_norm(loss, [w], samples=3, generator=torch.Generator().manual_seed(0))

    w0 = torch.tensor([0.4, -0.3, 0.9], dtype=torch.float64)
    w = w0.clone().requires_grad_()
    (grad,) = torch.autograd.grad(estimate(w), w)
    eps = 1e-6
    for i in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[i] = eps
        plus = estimate((w0 + step).requires_grad_())
        minus = estimate((w0 - step).requires_grad_())
        assert float(grad[i]) == pytest.approx((plus - minus).item() / (2 * eps), rel=1e-4)
    assert grad.abs().max() > 0.1


def test_hessian_norm_module_and_a_loss_linear_in_the_weights() -> None:
    w = torch.randn(5, requires_grad=True)
    assert HessianNorm(4)((w * 3.0).sum(), [w]).item() == 0.0  # a constant gradient: H = 0
    quadratic = (w * torch.arange(1.0, 6.0) * w).sum()  # H = diag(2, 4, …, 10), exact for ±1
    assert HessianNorm(2)(quadratic, [w]).item() == pytest.approx(4 * (1 + 4 + 9 + 16 + 25))
    with pytest.raises(ValueError, match="samples"):
        HessianNorm(0)


def _blobs(n: int = 96, seed: int = 0) -> ArrayData:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centres = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    return ArrayData(centres[y] + 0.5 * torch.randn(n, 4, generator=g), y)


def _mlp(seed: int, hidden: int = 8) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 3))


def test_robust_loss_is_the_clean_loss_at_zero_delta_and_grows_with_delta() -> None:
    data = _blobs()
    model = _mlp(0)
    fit(Supervised(model), data, epochs=30, batch_size=32, optimizer={"name": "adam", "lr": 0.05})
    model.eval()
    with torch.no_grad():
        clean = F.cross_entropy(model(data.x), data.y)
        assert torch.equal(robust_loss(model, data.x, data.y, 0.0, samples=5), clean)
        losses = [
            float(
                RobustLoss(delta, samples=20)(
                    model, data.x, data.y, torch.Generator().manual_seed(0)
                )
            )
            for delta in (0.0, 0.5, 1.0, 2.0)
        ]
    assert losses[0] < 0.1
    assert all(a < b for a, b in zip(losses, losses[1:], strict=False)), losses


def test_box_noise_fills_the_box_around_each_input() -> None:
    x = torch.arange(6.0).reshape(3, 2)
    noisy = box_noise(x, 0.5, samples=2000, generator=torch.Generator().manual_seed(0))
    assert noisy.shape == (6000, 2)
    offsets = noisy.reshape(2000, 3, 2) - x
    assert offsets.abs().max() <= 0.5
    assert offsets.abs().amax(dim=0).min() > 0.49  # reaches every face of the box
    corners = (offsets.abs() > 0.4).all(dim=2).float().mean()
    assert corners == pytest.approx(0.2**2, abs=0.01)  # a box, not a ball: its corners are hit
    assert robust_loss(nn.Identity(), x, x, 0.0, task="regression").item() == 0.0


def _teacher_and_student() -> tuple[nn.Sequential, nn.Sequential, dict]:
    """A 4-2-3 teacher and a 4-5-3 student; the teacher's hidden units at student units 0, 2."""
    teacher, student = _mlp(1, hidden=2), _mlp(2, hidden=5)
    hidden, inputs, classes = torch.arange(0, 4, 2), torch.arange(4), torch.arange(3)
    slots = {
        "0.weight": (hidden, inputs),
        "0.bias": (hidden,),
        "2.weight": (classes, hidden),
        "2.bias": (classes,),
    }
    return teacher, student, slots


def test_the_anchor_is_the_squared_distance_at_the_slots() -> None:
    teacher, student, slots = _teacher_and_student()
    u = teacher.state_dict()
    w = student.state_dict()
    expected = (
        (u["0.weight"] - w["0.weight"][0:4:2, :]).pow(2).sum()
        + (u["0.bias"] - w["0.bias"][0:4:2]).pow(2).sum()
        + (u["2.weight"] - w["2.weight"][:, 0:4:2]).pow(2).sum()
        + (u["2.bias"] - w["2.bias"]).pow(2).sum()
    )
    method = GrowthObjective(student, teacher_state=u, slots=slots, weights=(0, 1, 0, 0))
    batch = {"x": torch.randn(4, 4), "y": torch.tensor([0, 1, 2, 0])}
    _, terms = method.forward_train(batch)
    assert set(terms) == {"anchor"}
    assert terms["anchor"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert expected > 0.1

    with torch.no_grad():
        student[0].weight[0:4:2] = u["0.weight"]
        student[0].bias[0:4:2] = u["0.bias"]
        student[2].weight[:, 0:4:2] = u["2.weight"]
        student[2].bias[:] = u["2.bias"]
    assert method.forward_train(batch)[1]["anchor"].item() == 0.0


@pytest.mark.parametrize("extension", ["zero", "zero_out", "gradmax", "net2net", "net2net_exact"])
@pytest.mark.parametrize(
    ("teacher_spec", "student_spec", "in_shape"),
    [
        ({"name": "mlp", "hidden": [5]}, {"name": "mlp", "hidden": [12]}, (1, 6, 6)),
        (
            {"name": "cnn", "channels": [3], "hidden": 5, "batch_norm": True},
            {"name": "cnn", "channels": [7], "hidden": 11, "batch_norm": True},
            (1, 8, 8),
        ),
        ({"name": "lstm", "hidden": 4}, {"name": "lstm", "hidden": 10}, (1, 5, 6)),
    ],
    ids=["mlp", "cnn_bn", "lstm"],
)
def test_the_anchor_to_the_placed_teacher_is_zero_after_growth_and_keeps_the_function(
    extension: str, teacher_spec: dict, student_spec: dict, in_shape: tuple
) -> None:
    torch.manual_seed(0)
    teacher = models.build(teacher_spec, in_shape=in_shape, num_outputs=3).eval()
    student = models.build(student_spec, in_shape=in_shape, num_outputs=3)
    x = torch.randn(64, *in_shape)
    options = {
        "gradmax": {"batch": (x, torch.randint(0, 3, (64,)))},
        "net2net_exact": {"exact": True},
    }.get(extension, {})
    slots = grow(teacher, student, extension.removesuffix("_exact"), seed=0, **options)
    anchor_only = GrowthObjective(
        student, teacher_state=placed(student, slots), slots=slots, weights=(0, 1, 0, 0)
    )
    assert float(anchor_only.anchor().detach()) == 0.0
    raw = GrowthObjective(student, teacher_state=teacher.state_dict(), slots=slots)
    # net2net's slots hold a copy's share of u, not u
    assert (float(raw.anchor().detach()) > 0) == extension.startswith("net2net")
    with torch.no_grad():
        assert (student.eval()(x) - teacher(x)).abs().max() < 1e-5
    grown = {name: p.detach().clone() for name, p in student.named_parameters()}
    fit(anchor_only, ArrayData(x, torch.randint(0, 3, (64,))), epochs=2, batch_size=16)
    # minimising the anchor alone leaves every weight where the function-preserving growth
    # put it (BatchNorm's running statistics follow the batches, as in any training)
    for name, p in student.named_parameters():
        assert torch.equal(p.detach(), grown[name]), name


def test_slots_are_checked_against_the_student_and_the_teacher() -> None:
    teacher, student, slots = _teacher_and_student()
    u = teacher.state_dict()
    with pytest.raises(ValueError, match="'0.weight'"):
        GrowthObjective(student, teacher_state=u, slots={"0.weight": (torch.arange(2),)})
    with pytest.raises(ValueError, match=r"'0.bias'.*outside \[0, 5\)"):
        GrowthObjective(student, teacher_state=u, slots={"0.bias": (torch.arange(4, 6),)})
    with pytest.raises(ValueError, match="'3.bias'"):
        GrowthObjective(student, teacher_state=u, slots={"3.bias": (torch.arange(2),)})
    with pytest.raises(ValueError, match=r"'2.bias'.*\(2,\).*\(3,\)"):
        GrowthObjective(student, teacher_state=u, slots={"2.bias": (torch.arange(2),)})


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ((0.5, 0.5, 0.5, 0.0), r"sum of 1, got 1\.5 for \[0\.5, 0\.5, 0\.5, 0\.0\]"),
        ((0.3, 0.3, 0.3, 0.0), r"sum of 1, got 0\.9"),
        ((1.2, -0.2, 0.0, 0.0), r"anchor weight is negative \(-0\.2\)"),
        ((0.5, 0.5), "four finite numbers"),
    ],
)
def test_weights_are_refused_by_name(weights: tuple, match: str) -> None:
    teacher, student, slots = _teacher_and_student()
    with pytest.raises(ValueError, match=match):
        GrowthObjective(student, teacher_state=teacher.state_dict(), slots=slots, weights=weights)


@pytest.mark.parametrize(
    ("weights", "names"),
    [
        ((0.25, 0.25, 0.25, 0.25), {"fit", "anchor", "robust", "curvature"}),
        ((0.5, 0.5, 0.0, 0.0), {"fit", "anchor"}),
        ((0.0, 0.0, 0.5, 0.5), {"robust", "curvature"}),
    ],
)
def test_a_zero_weight_drops_its_term(weights: tuple, names: set) -> None:
    teacher, student, slots = _teacher_and_student()
    method = GrowthObjective(
        student, teacher_state=teacher.state_dict(), slots=slots, weights=weights
    )
    assert set(method.forward_train({"x": torch.randn(4, 4), "y": torch.arange(4) % 3})[1]) == names


def test_the_terms_are_the_weighted_losses() -> None:
    teacher, student, slots = _teacher_and_student()
    method = GrowthObjective(
        student,
        teacher_state=teacher.state_dict(),
        slots=slots,
        weights=(0.1, 0.2, 0.3, 0.4),
        delta=0.25,
        robust_samples=3,
        hessian_samples=2,
    )
    x, y = torch.randn(8, 4), torch.arange(8) % 3
    torch.manual_seed(7)
    output, terms = method.forward_train({"x": x, "y": y})
    torch.manual_seed(7)
    clean = task_loss("classification", student(x), y)
    robust = robust_loss(student, x, y, 0.25, 3)
    curvature = hessian_norm(clean, student.parameters(), 2)
    assert torch.equal(output, student(x))
    assert terms["fit"].item() == pytest.approx(0.1 * clean.item(), rel=1e-6)
    assert terms["anchor"].item() == pytest.approx(0.2 * method.anchor().item(), rel=1e-6)
    assert terms["robust"].item() == pytest.approx(0.3 * robust.item(), rel=1e-6)
    assert terms["curvature"].item() == pytest.approx(0.4 * curvature.item(), rel=1e-6)
    assert robust.item() != pytest.approx(clean.item())  # the noise was applied


def test_registered_as_growth() -> None:
    teacher, student, slots = _teacher_and_student()
    method = methods.build(
        {"name": "growth", "weights": [0.4, 0.6, 0.0, 0.0], "delta": 0.2},
        student=student,
        teacher_state=teacher.state_dict(),
        slots=slots,
    )
    assert isinstance(method, GrowthObjective)
    assert method.weights == (0.4, 0.6, 0.0, 0.0) and method.columns == ("x", "y")


def _objective(weights: tuple, **settings) -> tuple[GrowthObjective, nn.Module, dict]:
    """A student holding the teacher at its slots, its other weights small, in the objective."""
    teacher, student, slots = _teacher_and_student()
    u = teacher.state_dict()
    with torch.no_grad():
        for name, slot in slots.items():
            w = student.get_parameter(name)
            w.mul_(0.1)
            index = torch.meshgrid(*slot, indexing="ij")
            w[index] = u[name]
    method = GrowthObjective(student, teacher_state=u, slots=slots, weights=weights, **settings)
    return method, student, u


def test_fit_logs_every_term_and_a_heavy_anchor_holds_the_teacher() -> None:
    data = _blobs(64)
    settings = {"epochs": 2, "batch_size": 16, "optimizer": {"name": "sgd", "lr": 0.2}}
    method, _, _ = _objective((0.25, 0.25, 0.25, 0.25), delta=0.3)
    history = fit(method, data, **settings)
    assert len(history) == 2
    for name in ("train_fit", "train_anchor", "train_robust", "train_curvature"):
        assert history[-1][name] > 0, name  # the anchor too: the fit moved the slotted weights

    def anchor_after(weights: tuple) -> float:
        method, _, _ = _objective(weights)
        assert method.anchor().item() == 0.0
        fit(method, data, **{**settings, "epochs": 6})
        return method.anchor().item()

    free, held = anchor_after((1.0, 0.0, 0.0, 0.0)), anchor_after((0.01, 0.97, 0.01, 0.01))
    assert free > 0.5
    assert held < 0.01 * free


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path) -> None:
    data = _blobs(48)
    weights = (0.4, 0.2, 0.2, 0.2)
    settings = {"epochs": 3, "batch_size": 16, "seed": 3}
    reference_method, reference_student, _ = _objective(weights, delta=0.5, hessian_samples=2)
    reference = fit(reference_method, data, **settings)

    calls = {"n": 0}

    def crashing(model: nn.Module) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash in epoch 2")
        return {}

    checkpoint = tmp_path / "run.pt"
    method, _, _ = _objective(weights, delta=0.5, hessian_samples=2)
    with pytest.raises(KeyboardInterrupt):
        fit(method, data, validate=crashing, checkpoint=checkpoint, **settings)
    assert len(torch.load(checkpoint, weights_only=True)["history"]) == 1

    resumed_method, resumed_student, _ = _objective(weights, delta=0.5, hessian_samples=2)
    torch.manual_seed(999)  # the draws of epochs 2–3 must come from the checkpointed RNG state
    resumed = fit(resumed_method, data, checkpoint=checkpoint, **settings)
    assert resumed == reference
    for a, b in zip(resumed_student.parameters(), reference_student.parameters(), strict=True):
        assert torch.equal(a, b)
