"""Bayesian distillation: the teacher's posterior restricted by the slot maps, the KL and ELBO
of a mean-field student, the MAP variant, the Laplace curvature and the calibration error."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from crossdistill.data import ArrayData
from crossdistill.experiments import ConfigError, load_config, run_experiment
from crossdistill.experiments.outputs import read_csv
from crossdistill.methods import (
    GaussianPosterior,
    MeanField,
    PriorMAP,
    VariationalDistillation,
    fisher_diagonal,
    gaussian_kl,
    kept_units,
    laplace_posterior,
    teacher_column,
)
from crossdistill.models import placed, unit_slots
from crossdistill.registries import datasets, models
from crossdistill.training import (
    evaluate,
    expected_calibration_error,
    fit,
    fit_many,
    reliability,
    stacking,
)


def mlp(hidden: list[int], seed: int = 0, inputs: int = 4, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return models.build({"name": "mlp", "hidden": hidden}, in_shape=(inputs,), num_outputs=classes)


def random_posterior(model: nn.Module, seed: int = 0) -> GaussianPosterior:
    generator = torch.Generator().manual_seed(seed)
    parameters = dict(model.named_parameters())
    return GaussianPosterior(
        {n: torch.randn(p.shape, generator=generator) for n, p in parameters.items()},
        {n: torch.rand(p.shape, generator=generator) + 0.1 for n, p in parameters.items()},
    )


KEPT = {"1": torch.tensor([0, 2, 5]), "3": torch.tensor([1, 4])}
"""Units of the 4-6-5-3 MLP's hidden layers ('1', '3') that the 4-3-2-3 student keeps."""


def test_restricted_prior_is_the_marginal_on_the_kept_units():
    big, small = mlp([6, 5]), mlp([3, 2], seed=1)
    posterior = random_posterior(big)
    prior = posterior.restrict(unit_slots(small, big, KEPT))
    first, second = KEPT["1"], KEPT["3"]
    expected = {
        "1.weight": lambda t: t[first],
        "1.bias": lambda t: t[first],
        "3.weight": lambda t: t[second][:, first],
        "3.bias": lambda t: t[second],
        "5.weight": lambda t: t[:, second],  # the dropped units' outgoing weights removed
        "5.bias": lambda t: t,
    }
    assert set(prior.mean) == set(expected)
    for name, take in expected.items():
        assert torch.equal(prior.mean[name], take(posterior.mean[name]))
        assert torch.equal(prior.variance[name], take(posterior.variance[name]))


def test_restricted_weights_compute_the_big_model_without_the_dropped_units():
    big, small = mlp([6, 5]), mlp([3, 2], seed=1)
    small.load_state_dict(placed(big, unit_slots(small, big, KEPT)))
    with torch.no_grad():  # silence the dropped units: zero their outgoing weights
        big.get_submodule("3").weight[:, [1, 3, 4]] = 0.0
        big.get_submodule("5").weight[:, [0, 2, 3]] = 0.0
    x = torch.randn(7, 4)
    torch.testing.assert_close(small(x), big(x))


def test_kept_channels_of_a_cnn_restrict_its_batch_norm_and_flattened_reads():
    def cnn(channels, seed):
        torch.manual_seed(seed)
        spec = {"name": "cnn", "channels": channels, "hidden": 5, "batch_norm": True}
        return models.build(spec, in_shape=(1, 8, 8), num_outputs=3)

    big, small = cnn([4, 6], 0), cnn([2, 3], 1)
    with torch.no_grad():  # statistics that differ per channel
        big.get_submodule("1").running_mean.uniform_(-1, 1)
        big.get_submodule("5").running_var.uniform_(0.5, 2)
    kept = {"0": torch.tensor([1, 3]), "4": torch.tensor([0, 2, 5])}
    small.load_state_dict(placed(big, unit_slots(small, big, kept)))
    with torch.no_grad():  # silence the dropped channels: zero what reads them
        big.get_submodule("4").weight[:, [0, 2]] = 0.0
        dense = big.get_submodule("9").weight.view(5, 6, 4)  # (hidden, channel, position)
        dense[:, [1, 3, 4]] = 0.0
    big.eval(), small.eval()
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(small(x), big(x))


def test_unit_slots_refuse_a_bad_placement():
    big, small = mlp([6, 5]), mlp([3, 2], seed=1)
    with pytest.raises(ValueError, match="kept: '5' is not a hidden Linear"):
        unit_slots(small, big, {"5": torch.arange(3)})
    with pytest.raises(ValueError, match="3 distinct int64 indices in \\[0, 6\\)"):
        unit_slots(small, big, {"1": torch.tensor([0, 0, 1])})
    with pytest.raises(ValueError, match="3 distinct int64 indices"):
        unit_slots(small, big, {"1": torch.tensor([0, 1, 6])})


def test_kept_units_by_signal_to_noise_and_at_random():
    big, small = mlp([6, 5]), mlp([3, 2], seed=1)
    posterior = random_posterior(big)
    snr = posterior.signal_to_noise()
    kept = kept_units(posterior, big, small, "snr")
    for name, n in (("1", 3), ("3", 2)):
        score = torch.cat([snr[f"{name}.weight"], snr[f"{name}.bias"][:, None]], 1).mean(1)
        assert torch.equal(kept[name], score.topk(n).indices.sort().values)
    drawn = kept_units(posterior, big, small, "random", seed=3)
    again = kept_units(posterior, big, small, "random", seed=3)
    assert all(torch.equal(drawn[k], again[k]) for k in drawn)
    assert [len(drawn[k].unique()) for k in ("1", "3")] == [3, 2]
    with pytest.raises(ValueError, match="layer '1': 6 units in the student, more than .* 3"):
        kept_units(random_posterior(small), small, big)


def test_kl_of_a_three_unit_layer_by_hand():
    layer = nn.Linear(1, 3, bias=False)
    mean_q, std_q = [0.5, -1.0, 2.0], [0.3, 1.0, 0.5]
    mean_p, var_p = [0.0, -0.5, 1.0], [1.0, 0.25, 2.0]
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(mean_q)[:, None])
    q = MeanField(
        layer,
        std=GaussianPosterior(
            {"weight": torch.tensor(mean_q)[:, None]},
            {"weight": torch.tensor(std_q)[:, None] ** 2},
        ),
    )
    prior = {"weight": (torch.tensor(mean_p)[:, None], torch.tensor(var_p)[:, None])}
    by_hand = sum(
        math.log(math.sqrt(vp) / sq) + (sq**2 + (mq - mp) ** 2) / (2 * vp) - 0.5
        for mq, sq, mp, vp in zip(mean_q, std_q, mean_p, var_p, strict=True)
    )
    assert q.kl(prior).item() == pytest.approx(by_hand, rel=1e-5)
    same = gaussian_kl(*prior["weight"], *prior["weight"])
    assert same.item() == pytest.approx(0.0, abs=1e-7)


def test_a_student_without_data_reproduces_the_teachers_posterior():
    """All units kept and only the prior to learn from: q goes to the prior."""
    teacher = mlp([6, 5])
    posterior = random_posterior(teacher, seed=2)
    student = mlp([6, 5], seed=5)
    prior = posterior.restrict(unit_slots(student, teacher))
    method = VariationalDistillation(MeanField(student, std=0.5), prior, rows=1)
    optimizer = torch.optim.Adam(method.parameters(), lr=0.05)
    for _ in range(3000):
        optimizer.zero_grad()
        method.student.kl(method.prior()).backward()
        optimizer.step()
    learned = method.student.posterior()
    for name in posterior.mean:
        torch.testing.assert_close(learned.mean[name], posterior.mean[name], atol=2e-3, rtol=0)
        torch.testing.assert_close(
            learned.variance[name], posterior.variance[name], atol=2e-3, rtol=1e-2
        )


def test_mean_field_draws_in_training_and_evaluates_deterministically():
    model = mlp([6])
    x = torch.randn(5, 4)
    q = MeanField(model, std=0.3)
    q.eval()
    torch.testing.assert_close(q(x), model(x))
    q.samples = 4
    assert torch.equal(q(x), q(x))
    assert torch.allclose(q(x).exp().sum(1), torch.ones(5))
    q.train()
    assert not torch.allclose(q(x), model(x))
    method = VariationalDistillation(q, GaussianPosterior.isotropic(model), rows=5)
    assert stacking([method, copy.deepcopy(method)]) == "apart"


def tiny_data(rows: int = 60, seed: int = 0) -> ArrayData:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 4, generator=generator)
    return ArrayData(x, (x[:, 0] > 0).long() + (x[:, 1] > 1).long())


def test_bayes_by_backprop_teacher_to_restricted_variational_and_map_students():
    data = tiny_data()
    teacher = mlp([6, 5])
    q = MeanField(teacher, std=1e-2)
    bbb = VariationalDistillation(q, GaussianPosterior.isotropic(teacher), rows=len(data))
    history = fit(bbb, data, epochs=30, batch_size=20, optimizer={"name": "adam", "lr": 0.03})
    assert {"train_labels", "train_kl"} <= set(history[-1])
    q.eval()
    assert evaluate(q, data, "classification")["accuracy"] > 0.7
    posterior = q.posterior()
    small = mlp([3, 2], seed=1)
    prior = posterior.restrict(unit_slots(small, teacher, kept_units(posterior, teacher, small)))
    with torch.no_grad():
        soft = teacher(data.x)
    columns = {"x": data.x, "y": data.y, teacher_column("teacher"): soft}
    students = [
        VariationalDistillation(MeanField(mlp([3, 2], 1), std=prior), prior, len(data), lam=0.5),
        PriorMAP(mlp([3, 2], 1), prior, len(data), lam=0.5, temperature=2.0),
    ]
    for method in students:
        history = fit(method, columns, epochs=3, batch_size=20)
        assert all(math.isfinite(h["train_loss"]) for h in history)
    assert students[1].columns == ("x", "y", "teacher/teacher")


def test_map_prior_term_by_hand_and_stacked_as_one_by_one():
    data = tiny_data()
    student = mlp([3])
    prior = random_posterior(student, seed=4)
    method = PriorMAP(student, prior, rows=60)
    _, losses = method.forward_train({"x": data.x[:8], "y": data.y[:8]})
    parameters = dict(student.named_parameters())
    by_hand = (
        sum(
            ((parameters[n] - prior.mean[n]) ** 2 / (2 * prior.variance[n])).sum()
            for n in parameters
        )
        / 60
    )
    torch.testing.assert_close(losses["prior"], by_hand)
    torch.testing.assert_close(losses["labels"], F.cross_entropy(student(data.x[:8]), data.y[:8]))

    def build(seed):
        return PriorMAP(mlp([3], seed), prior, rows=60, lam=1.0)

    stacked = fit_many([build(0), build(1)], data, seeds=[0, 1], epochs=2, batch_size=16)
    alone = [fit(build(s), data, epochs=2, batch_size=16, seed=s) for s in (0, 1)]
    for a, b in zip(stacked, alone, strict=True):
        assert a[-1]["train_loss"] == pytest.approx(b[-1]["train_loss"], abs=1e-5)


def test_methods_refuse_a_prior_over_other_parameters():
    prior = random_posterior(mlp([6]))
    with pytest.raises(ValueError, match="prior: over"):
        PriorMAP(mlp([3, 2]), prior, rows=10)
    with pytest.raises(TypeError, match="expected a MeanField"):
        VariationalDistillation(mlp([6]), prior, rows=10)
    with pytest.raises(ValueError, match="variances must be finite and > 0"):
        GaussianPosterior({"w": torch.zeros(2)}, {"w": torch.tensor([1.0, 0.0])})


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    spec = {"name": "cnn", "channels": [2], "hidden": 4}
    return models.build(spec, in_shape=(1, 4, 4), num_outputs=3)


@pytest.mark.parametrize(
    "build,shape",
    [
        (lambda: nn.Linear(4, 3), (4,)),  # Linear layers only: matrix products
        (lambda: mlp([5]), (4,)),
        (_tiny_cnn, (1, 4, 4)),  # a convolution: per-row gradients through torch.func
    ],
)
def test_laplace_curvatures_by_hand(build, shape):
    model = build()
    generator = torch.Generator().manual_seed(0)
    data = ArrayData(torch.randn(9, *shape, generator=generator), torch.arange(9) % 3)
    for curvature in ("fisher", "empirical"):
        diagonal = fisher_diagonal(model, data, curvature=curvature, batch_size=4)
        posterior = laplace_posterior(model, diagonal, prior_precision=2.0)
        total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        for x, y in zip(data.x, data.y, strict=True):
            p = model(x[None]).softmax(1)[0].detach()
            for c in range(3) if curvature == "fisher" else [int(y)]:
                model.zero_grad()
                F.cross_entropy(model(x[None]), torch.tensor([c])).backward()
                weight = p[c] if curvature == "fisher" else 1.0
                for n, param in model.named_parameters():
                    total[n] += weight * param.grad**2
        for n, param in model.named_parameters():
            torch.testing.assert_close(posterior.mean[n], param.detach())
            torch.testing.assert_close(posterior.variance[n], 1 / (2.0 + total[n]))


def test_expected_calibration_error_by_hand():
    # confidences 0.9, 0.9, 0.6, 0.6 (bins 13 and 9 of 15); the first of each pair is right
    probabilities = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    y = torch.tensor([0, 0, 0, 0])
    table = reliability(probabilities.log(), y)
    assert table.count[13] == 2 and table.count[9] == 2 and table.count.sum() == 4
    by_hand = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(0.5 - 0.6)
    assert expected_calibration_error(probabilities.log(), y) == pytest.approx(by_hand)
    assert expected_calibration_error(probabilities.log(), y, bins=1) == pytest.approx(0.25)


BAYES = {
    "kind": "bayes",
    "name": "tiny_bayes",
    "data": {"name": "digits", "small": 60, "seed": 0},
    "validation": 20,
    "teacher": {"model": {"name": "mlp", "hidden": [16, 16]}, "train": {"epochs": 3}},
    "widths": [0.5, 0.25],
    "train": {"epochs": 2, "batch_size": 16},
    "samples": 2,
    "seeds": [0, 1],
    "arms": {
        "scratch": {},
        "kd": {"lam": [0.3, 0.7], "temperature": 2.0},
        "bayes_prior": {"prior": "teacher", "start": "teacher", "prior_precision": [1.0, 10.0]},
        "bayes_map": {"method": "map", "prior": "teacher", "start": "teacher", "lam": 0.5},
        "teacher_init": {"start": "teacher", "rule": "random"},
    },
}


def _run_bayes(folder, changes: dict, out: str):
    path = folder / f"{out}.yaml"
    path.write_text(yaml.safe_dump({**BAYES, **changes}))
    run_experiment(load_config(path), folder / out, progress=False)
    return read_csv(folder / out / "table.csv")


def test_bayes_kind_end_to_end_and_resumes(tmp_path):
    table = _run_bayes(tmp_path, {}, "run")
    cells = {(row["arm"], row["metric"]): row for row in table}
    for arm in BAYES["arms"]:
        for width, hidden in ((0.5, 8), (0.25, 4)):
            unit = f"{arm}@{width:g}"
            assert float(cells[unit, "ece"]["n"]) == 2
            assert 0 <= float(cells[unit, "ece"]["mean"]) <= 1
            parameters = 64 * hidden + hidden + hidden * hidden + hidden + hidden * 10 + 10
            assert float(cells[unit, "parameters"]["mean"]) == parameters
    assert float(cells["bayes_prior@0.5", "prior_precision"]["mean"]) in (1.0, 10.0)
    assert float(cells["scratch@0.5", "prior_precision"]["mean"]) == 1.0
    out = tmp_path / "run"
    for figure in ("reliability.png", "accuracy.png"):
        assert (out / "figures" / figure).stat().st_size > 0
    bins = read_csv(out / "reliability.csv")
    assert sum(int(r["count"]) for r in bins if r["arm"] == "kd@0.5" and r["seed"] == "0") == len(
        datasets.build(BAYES["data"]).test
    )
    again = _run_bayes(tmp_path, {}, "run")  # resumes every unit, curvature included
    assert again == table


def test_bayes_config_is_checked_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="prior_precision.*must be positive, found 0"):
        _run_bayes(tmp_path, {"arms": {"scratch": {"prior_precision": [1.0, 0.0]}}}, "swept")
    spec = {"model": {"name": "mlp"}, "train": {"epochs": 1}}
    with pytest.raises(ConfigError, match="sets no `hidden` or `channels` to narrow"):
        _run_bayes(tmp_path, {"teacher": spec}, "unnarrowed")
    assert not (tmp_path / "swept").exists() and not (tmp_path / "unnarrowed").exists()
