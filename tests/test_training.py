"""The training loop, resume after interruption, evaluation, and the teacher-output cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crossdistill.data import ArrayData
from crossdistill.mappings import GaussianNoise, Identity
from crossdistill.methods import Distillation, Supervised, distill
from crossdistill.training import TeacherCache, evaluate, fit, fit_many, metrics


def _blobs(n: int = 96, seed: int = 0) -> ArrayData:
    """Three Gaussian blobs in 2-D, shaped as tiny 1×2×2 'images' with 3 classes."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centres = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    x = centres[y] + 0.5 * torch.randn(n, 4, generator=g)
    return ArrayData(x.reshape(n, 1, 2, 2), y)


def _model(seed: int, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(4, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3)
    )


def test_fit_learns_and_reports_each_epoch() -> None:
    data = _blobs()
    model = _model(0)
    history = fit(
        Supervised(model),
        data,
        epochs=5,
        batch_size=16,
        optimizer={"name": "adam", "lr": 0.05},
        validate=lambda m: evaluate(m, data, "classification"),
    )
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["accuracy"] > 0.9


def test_fit_is_deterministic_for_a_seed() -> None:
    data = _blobs()
    runs = [fit(Supervised(_model(1, 0.3)), data, epochs=3, seed=7) for _ in range(2)]
    assert runs[0] == runs[1]
    other = fit(Supervised(_model(1, 0.3)), data, epochs=3, seed=8)
    assert other != runs[0]


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path) -> None:
    data, test = _blobs(), _blobs(seed=1)
    settings = {"epochs": 6, "batch_size": 16, "seed": 3}

    def validate(model):
        return evaluate(model, test, "classification")

    reference_model = _model(0, dropout=0.5)
    reference = fit(Supervised(reference_model), data, validate=validate, **settings)

    calls = {"n": 0}

    def crashing(model):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("simulated crash in epoch 4")
        return validate(model)

    checkpoint = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(
            Supervised(_model(0, dropout=0.5)),
            data,
            validate=crashing,
            checkpoint=checkpoint,
            **settings,
        )
    assert len(torch.load(checkpoint, weights_only=True)["history"]) == 3

    resumed_model = _model(99, dropout=0.5)  # other weights: the checkpoint must replace them
    resumed = fit(
        Supervised(resumed_model),
        data,
        validate=validate,
        checkpoint=checkpoint,
        **settings,
    )
    assert resumed == reference
    for a, b in zip(resumed_model.parameters(), reference_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_metrics_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    y = torch.tensor([0, 0, 0])
    m = metrics(logits, y, "classification")
    expected_ce = -(F.log_softmax(logits, 1)[torch.arange(3), y]).mean().item()
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["cross_entropy"] == pytest.approx(expected_ce)
    mse = metrics(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]]), "regression")
    assert mse["mse"] == pytest.approx((1 + 4) / 2)


class _CountingTeacher(nn.Module):
    """A fixed linear teacher that counts the rows it has been run on."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        self.rows = 0

    def forward(self, x):
        self.rows += len(x)
        return self.net(x)


def test_sweep_runs_teacher_over_student_data_exactly_once(tmp_path) -> None:
    data = _blobs()
    teacher = _CountingTeacher()
    cache = TeacherCache()
    for lam in (0.1, 0.3, 0.5, 0.7, 0.9):
        for seed in (0, 1, 2):
            distill(
                _model(seed),
                data,
                teacher=teacher,
                lam=lam,
                temperature=2.0,
                cache=cache,
                epochs=1,
                seed=seed,
            )
    assert teacher.rows == len(data)
    assert cache.computed == 1


def test_cache_keys_on_teacher_mapping_and_data(tmp_path) -> None:
    data = _blobs()
    teacher = _CountingTeacher()
    cache = TeacherCache(tmp_path)
    first = cache.outputs(teacher, Identity(), data.x)
    assert torch.equal(first, teacher.net(data.x))
    noisy = cache.outputs(teacher, GaussianNoise(variance=0.1, seed=0), data.x)
    assert not torch.equal(first, noisy)
    cache.outputs(teacher, Identity(), data.x[:10])
    assert cache.computed == 3
    # a new cache over the same directory reads the files instead of running the teacher
    rows = teacher.rows
    again = TeacherCache(tmp_path).outputs(teacher, GaussianNoise(variance=0.1, seed=0), data.x)
    assert teacher.rows == rows
    assert torch.equal(again, noisy)
    # changed teacher weights are a different key
    with torch.no_grad():
        teacher.net[1].bias += 1
    cache.outputs(teacher, Identity(), data.x)
    assert cache.computed == 4


def test_distill_needs_a_teacher_unless_lambda_is_one() -> None:
    with pytest.raises(ValueError, match="no teacher"):
        distill(_model(0), _blobs(), lam=0.5, epochs=1)
    assert len(distill(_model(0), _blobs(), lam=1.0, epochs=2)) == 2


def test_columns_must_align_and_hold_what_the_method_reads() -> None:
    data = _blobs()
    with pytest.raises(ValueError, match="same number of rows; found x: 96, y: 96, teacher/t: 5"):
        fit(Supervised(_model(0)), data.columns(**{"teacher/t": torch.zeros(5, 3)}), epochs=1)
    with pytest.raises(ValueError, match="Distillation reads column 'teacher/teacher'"):
        fit(Distillation(_model(0), lam=0.5), data, epochs=1)


def test_any_map_style_dataset_becomes_in_memory_tensors() -> None:
    class Pairs(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 5

        def __getitem__(self, i: int):
            return torch.full((1, 2, 2), float(i)), i % 3

    data = ArrayData.from_dataset(Pairs())
    assert data.x.shape == (5, 1, 2, 2) and data.y.tolist() == [0, 1, 2, 0, 1]
    assert torch.equal(data.x[3], torch.full((1, 2, 2), 3.0))
    assert ArrayData.from_dataset(data) is data


class _DtypeProbe(Supervised):
    """Supervised training that records the dtype of the model's outputs in each step."""

    seen: list[torch.dtype]

    def forward_train(self, batch):
        output, losses = super().forward_train(batch)
        self.seen.append(output.dtype)
        return output, losses


def test_fit_in_bf16_runs_the_forward_pass_under_autocast_and_keeps_float32_weights() -> None:
    torch.manual_seed(0)
    data = ArrayData(torch.randn(64, 5), torch.randint(0, 3, (64,)))
    probe = _DtypeProbe(nn.Linear(5, 3), "classification")
    probe.seen = []
    history = fit(probe, data, epochs=3, batch_size=16, precision="bf16")
    assert set(probe.seen) == {torch.bfloat16}
    assert probe.student.weight.dtype == torch.float32
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    probe.seen = []
    fit(probe, data, epochs=1, batch_size=16)
    assert set(probe.seen) == {torch.float32}
    with pytest.raises(ValueError, match="precision: expected one of float32, bf16"):
        fit(probe, data, epochs=1, precision="fp8")


def test_device_auto_is_cuda_where_there_is_one(monkeypatch) -> None:
    from crossdistill.training.devices import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert check_device("auto") == "cuda"


def test_training_data_stays_on_a_cuda_device_only_when_it_fits(monkeypatch, caplog) -> None:
    from crossdistill.training.devices import resident_device

    columns = {"x": torch.zeros(100, 10), "y": torch.zeros(100, dtype=torch.int64)}  # 4 800 B
    cpu, cuda = torch.device("cpu"), torch.device("cuda:0")
    assert resident_device(columns, cpu) == cpu
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (9_600, 20_000))
    assert resident_device(columns, cuda) == cuda
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (9_599, 20_000))
    with caplog.at_level("INFO", logger="crossdistill.training.devices"):
        assert resident_device(columns, cuda) == cpu
    assert "training data (0.00 GB) kept on the CPU and moved to cuda:0 batch by batch" in (
        caplog.text
    )
    with caplog.at_level("INFO", logger="crossdistill.training.devices"):
        assert resident_device(columns, cuda, what="teacher's input") == cpu
    assert "teacher's input (0.00 GB) kept on the CPU" in caplog.text


def test_a_teacher_pass_applies_its_mapping_where_its_input_is_kept(monkeypatch) -> None:
    from crossdistill.training import cache as cache_module

    asked, seen_on = [], []

    def record(columns, device, what):
        asked.append((sorted(columns), tuple(columns["x"].shape), device, what))
        return torch.device("cpu")

    class Spy(nn.Module):
        def forward(self, x):
            seen_on.append(x.device)
            return x

    monkeypatch.setattr(cache_module, "resident_device", record)
    data = _blobs(20)
    TeacherCache().outputs(_CountingTeacher(), Spy(), data.x, name="big teacher")
    assert asked == [(["x"], (20, 1, 2, 2), torch.device("cpu"), "big teacher's input")]
    assert seen_on == [torch.device("cpu")]


@pytest.mark.parametrize("many", [False, True])
def test_fit_and_fit_many_ask_where_to_keep_their_data(monkeypatch, many) -> None:
    from crossdistill.training import batched, loop

    asked = []

    def record(columns, device):
        asked.append((sorted(columns), tuple(next(iter(columns.values())).shape), device))
        return device

    monkeypatch.setattr(loop, "resident_device", record)
    monkeypatch.setattr(batched, "resident_device", record)
    data = ArrayData(torch.randn(20, 5), torch.randint(0, 3, (20,)))
    methods = [Supervised(nn.Linear(5, 3)) for _ in range(2)]
    if many:
        fit_many(methods, [data, data], seeds=[0, 1], epochs=1)
        assert asked == [(["x", "y"], (2, 20, 5), torch.device("cpu"))]
    else:
        fit(methods[0], data, epochs=1)
        assert asked == [(["x", "y"], (20, 5), torch.device("cpu"))]
