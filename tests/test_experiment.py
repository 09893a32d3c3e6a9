"""Experiments end to end: the CLI, the run-directory contract, the cache and resuming."""

from __future__ import annotations

import statistics

import pytest
import torch

import crossdistill.training.batched as batched_module
import crossdistill.training.cache as cache_module
from crossdistill.cli import main
from crossdistill.experiments import run_experiment
from crossdistill.experiments.config import load_config
from crossdistill.experiments.outputs import read_csv

TINY_DIGITS = [
    "data.small=150",
    "validation=40",
    "teachers.teacher.train.epochs=3",
    "student.train.epochs=4",
]


@pytest.mark.slow
def test_cli_run_on_real_fashion_mnist(data_root, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CROSSDISTILL_DATA", str(data_root))
    out = tmp_path / "run"
    status = main(
        [
            "run",
            "fmnist_noise",
            "data.big_size=3000",
            "data.test_size=1000",
            "teachers.teacher.train.epochs=2",
            "student.train.epochs=3",
            "seeds=[0,1]",
            "arms.teacher.lam=[0.5,0.9]",
            "arms.teacher.temperature=2",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "| no_teacher |" in printed and "| teacher |" in printed

    config = load_config(out / "config.yaml")
    assert config.seeds == [0, 1] and config.data.big_size == 3000

    metrics = read_csv(out / "metrics.csv")
    assert len(metrics) == 2 * 2 * 3  # arms × seeds × epochs
    assert {"arm", "seed", "epoch", "lam", "temperature", "accuracy", "cross_entropy"} <= set(
        metrics[0]
    )
    assert {(r["arm"], r["seed"]) for r in metrics} == {
        (arm, seed) for arm in ("no_teacher", "teacher") for seed in ("0", "1")
    }

    with (out / "table.csv").open() as file:
        assert file.readline().strip() == "arm,metric,mean,std,n"
    table = {(r["arm"], r["metric"]): r for r in read_csv(out / "table.csv")}
    assert table["teacher", "accuracy"]["n"] == "2"
    last = [float(r["accuracy"]) for r in metrics if r["arm"] == "teacher" and r["epoch"] == "3"]
    assert float(table["teacher", "accuracy"]["mean"]) == pytest.approx(sum(last) / 2)
    assert float(table["teacher", "lam"]["mean"]) in (0.5, 0.9)
    jitters = []
    for seed in ("0", "1"):
        losses = [
            float(r["cross_entropy"]) for r in metrics if (r["arm"], r["seed"]) == ("teacher", seed)
        ]
        jitters.append(statistics.stdev(losses))  # all 3 epochs are within the last 10
    assert float(table["teacher", "cross_entropy_jitter"]["mean"]) == pytest.approx(
        statistics.mean(jitters)
    )
    assert int(float(table["teacher", "teacher_parameters"]["mean"])) > int(
        float(table["teacher", "parameters"]["mean"])
    )
    assert len(read_csv(out / "selection.csv")) == 2 * 2  # λ values × seeds, on validation
    assert "test accuracy" in (out / "table.md").read_text()
    for figure in ("accuracy.png", "cross_entropy.png"):
        assert (out / "figures" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_runs_the_teacher_once_over_the_student_data(tmp_path, monkeypatch) -> None:
    fed: list[int] = []
    original = cache_module._teacher_pass

    def counting(teacher, seen, *args, **kwargs):
        fed.append(len(seen))
        return original(teacher, seen, *args, **kwargs)

    monkeypatch.setattr(cache_module, "_teacher_pass", counting)
    config = load_config(
        "digits",
        [*TINY_DIGITS, "arms.teacher.lam=[0.1,0.3,0.5,0.7,0.9]", "arms.teacher.temperature=2"],
    )
    assert len(config.arms["teacher"].settings()) == 5 and len(config.seeds) == 3
    run_experiment(config, tmp_path / "run", progress=False)
    assert fed == [150, 397]  # Small once (for all 5 λ × 3 seeds and the final arm), Test once

    fed.clear()
    run_experiment(config, tmp_path / "run", progress=False)  # a rerun reads everything back
    assert fed == []


def test_interrupted_experiment_resumes_to_the_same_results(tmp_path, monkeypatch) -> None:
    config = load_config("digits", [*TINY_DIGITS, "arms.teacher.lam=[0.3,0.7]", "seeds=[0,1]"])
    run_experiment(config, tmp_path / "whole", progress=False)

    original, calls = batched_module.metrics, {"n": 0}

    def crashing(*args, **kwargs):  # Test scores of the stacked students, epoch by epoch
        calls["n"] += 1
        if calls["n"] == 13:  # arm teacher, epoch 3 (no_teacher: 4 epochs × 2 seeds before)
            raise KeyboardInterrupt("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(batched_module, "metrics", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, tmp_path / "resumed", progress=False)
    kept = torch.load(tmp_path / "resumed" / "checkpoints" / "teacher-seeds.pt", weights_only=True)
    assert [len(history) for history in kept["histories"]] == [2, 2]  # written on Ctrl-C
    monkeypatch.setattr(batched_module, "metrics", original)
    run_experiment(config, tmp_path / "resumed", progress=False)

    for name in ("metrics.csv", "selection.csv", "table.csv", "teacher.csv"):
        assert (tmp_path / "resumed" / name).read_text() == (tmp_path / "whole" / name).read_text()


def test_bad_config_is_named_and_leaves_no_output(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["run", "digits", "student.train.epochs=many", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "student.train.epochs" in error and "many" in error
    assert not out.exists()


def test_a_run_directory_of_another_config_is_refused(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["run", "digits", *TINY_DIGITS, "seeds=[0]", "--out", str(out), "--quiet"]) == 0
    assert main(["run", "digits", *TINY_DIGITS, "seeds=[1]", "--out", str(out), "--quiet"]) == 2
    assert "different config" in capsys.readouterr().err


def test_list_shows_the_experiments(capsys) -> None:
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    for name in ("digits", "fmnist_identity", "fmnist_noise", "fmnist_dilation"):
        assert name in listing


def test_missing_data_is_named_and_leaves_no_output(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CROSSDISTILL_DATA", raising=False)
    out = tmp_path / "run"
    argv = ["run", "fmnist_identity", f"data.data_dir={tmp_path / 'empty'}", "data.download=false"]
    assert main([*argv, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "fashion-mnist" in error and "CROSSDISTILL_DATA" in error
    assert not out.exists()


def test_device_option_picks_the_device_or_names_a_missing_one(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    if not torch.cuda.is_available():
        assert main(["run", "digits", *TINY_DIGITS, "--device", "cuda", "--out", str(out)]) == 2
        error = capsys.readouterr().err
        assert "field 'device'" in error and "not on this machine" in error
        assert not out.exists()
    argv = ["run", "digits", *TINY_DIGITS, "seeds=[0]", "--device", "auto", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert f"device: {expected}" in (out / "config.yaml").read_text()


def test_batched_and_one_by_one_seeds_give_the_same_table(tmp_path) -> None:
    tables, selections = {}, {}
    for batched in (True, False):
        out = tmp_path / f"batched_{batched}"
        config = load_config("digits", [*TINY_DIGITS, f"batched={str(batched).lower()}"])
        tables[batched] = run_experiment(config, out, progress=False)
        selections[batched] = read_csv(out / "selection.csv")
        stacks = sorted(p.name for p in (out / "checkpoints").glob("teacher-seed*.pt"))
        assert stacks == (
            ["teacher-seeds.pt"]
            if batched
            else ["teacher-seed0.pt", "teacher-seed1.pt", "teacher-seed2.pt"]
        )
        sweep = sorted(p.name for p in (out / "checkpoints" / "selection").iterdir())
        settings = config.arms["teacher"].settings()  # 10 (λ, T), each for the 3 seeds
        apart = [f"teacher-lam{a:g}-T{t:g}-seed{s}.pt" for a, t in settings for s in config.seeds]
        assert sweep == (["teacher-sweep-seeds.pt"] if batched else sorted(apart))
    assert [(r["arm"], r["metric"]) for r in tables[True]] == [
        (r["arm"], r["metric"]) for r in tables[False]
    ]
    for one, many in zip(tables[False], tables[True], strict=True):
        assert many["mean"] == pytest.approx(one["mean"], abs=1e-6), (one["arm"], one["metric"])
    assert len(selections[True]) == len(settings) * len(config.seeds)
    scores = ("accuracy", "cross_entropy")
    for one, many in zip(selections[False], selections[True], strict=True):
        assert {k: v for k, v in many.items() if k not in scores} == {
            k: v for k, v in one.items() if k not in scores
        }
        assert [float(many[k]) for k in scores] == pytest.approx(
            [float(one[k]) for k in scores], abs=1e-6
        )
    chosen = {
        batched: {(r["metric"], r["mean"]) for r in table if r["metric"] in ("lam", "temperature")}
        for batched, table in tables.items()
    }
    assert chosen[True] == chosen[False]


def test_train_seeds_one_by_one_refuses_runs_that_would_share_a_checkpoint(tmp_path) -> None:
    from crossdistill.experiments.config import TrainConfig
    from crossdistill.experiments.teachers import train_seeds
    from crossdistill.methods import Supervised

    methods = [Supervised(torch.nn.Linear(2, 2)) for _ in range(2)]
    data = {"x": torch.zeros(4, 2), "y": torch.zeros(4, dtype=torch.int64)}
    with pytest.raises(ValueError, match="runs of the same seed would share a checkpoint"):
        train_seeds(
            methods,
            data,
            [0, 0],
            TrainConfig(epochs=1),
            batched=False,
            checkpoints=tmp_path / "sweep",
            names=["a", "b"],
        )
    assert not list(tmp_path.iterdir())
