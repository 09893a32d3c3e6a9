"""Model zoo: output shapes, parameter counts, building by name."""

import pytest
import torch

from crossdistill.models import cnn, count_parameters, mlp
from crossdistill.registries import models


@pytest.mark.parametrize("in_shape", [(1, 28, 28), (64,), (3, 32, 32), (1, 8, 8)])
def test_mlp_output_shape(in_shape: tuple[int, ...]) -> None:
    model = mlp(in_shape, 10, hidden=(16, 8))
    assert model(torch.zeros(5, *in_shape)).shape == (5, 10)


@pytest.mark.parametrize("in_shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32)])
def test_cnn_output_shape(in_shape: tuple[int, ...]) -> None:
    model = cnn(in_shape, 7, channels=(4, 8), hidden=16)
    assert model(torch.zeros(3, *in_shape)).shape == (3, 7)


def test_parameter_counts_by_hand() -> None:
    assert count_parameters(mlp((1, 28, 28), 10)) == 784 * 64 + 64 + 64 * 10 + 10 == 50_890
    hinton = mlp((784,), 10, hidden=(1200, 1200))
    assert count_parameters(hinton) == 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10
    # conv 1→4 (3×3): 40; 8×8 pooled to 4×4 → 64 features; 64→5: 325; 5→3: 18.
    assert count_parameters(cnn((1, 8, 8), 3, channels=(4,), hidden=5)) == 40 + 325 + 18


def test_count_parameters_counts_only_trainable() -> None:
    model = mlp((784,), 10)
    model[1].requires_grad_(False)
    assert count_parameters(model) == 64 * 10 + 10


def test_build_by_name_with_shape_defaults() -> None:
    model = models.build(
        {"name": "mlp", "hidden": [32], "activation": "tanh"}, in_shape=(64,), num_outputs=10
    )
    assert isinstance(model[2], torch.nn.Tanh)
    assert count_parameters(model) == 64 * 32 + 32 + 32 * 10 + 10
    assert models.build("cnn", in_shape=(1, 28, 28), num_outputs=10)(
        torch.zeros(2, 1, 28, 28)
    ).shape == (2, 10)
    # other test modules register their own, named test_*
    assert [n for n in models.names() if not n.startswith("test_")] == ["cnn", "lstm", "mlp"]


def test_bad_settings_are_value_errors() -> None:
    with pytest.raises(ValueError, match="activation"):
        mlp((4,), 2, activation="swish")
    with pytest.raises(ValueError, match="too small"):
        cnn((1, 2, 2), 2, channels=(4, 4))
    with pytest.raises(ValueError, match="in_shape"):
        cnn((64,), 2)
