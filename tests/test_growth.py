"""Growth (SPEC §1.5): the teacher's weights at their slots, function preservation of zero and
net2net widening for mlp, cnn (with BatchNorm) and lstm, grown classes and inputs, ψ, the
extensions' new entries, refusals; the lstm model and cnn's batch_norm."""

import copy

import pytest
import torch
from torch import Tensor, nn

from crossdistill.models import RowLSTM, at_slot, cnn, grow, lstm

# (teacher spec, student spec, in_shape): students more than twice as wide, so that net2net
from crossdistill.registries import models

# copies some teacher unit more than once
CASES = {
    "mlp": ({"name": "mlp", "hidden": [5, 4]}, {"name": "mlp", "hidden": [12, 9]}, (1, 6, 6)),
    "cnn": (
        {"name": "cnn", "channels": [3, 4], "hidden": 5},
        {"name": "cnn", "channels": [7, 9], "hidden": 11},
        (1, 8, 8),
    ),
    "cnn_bn": (
        {"name": "cnn", "channels": [3, 4], "hidden": 5, "batch_norm": True},
        {"name": "cnn", "channels": [7, 9], "hidden": 11, "batch_norm": True},
        (1, 8, 8),
    ),
    "lstm": ({"name": "lstm", "hidden": 4}, {"name": "lstm", "hidden": 10}, (1, 5, 6)),
}
CLASSES = 3


def build(spec: dict, in_shape: tuple[int, ...], classes: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return models.build(spec, in_shape=in_shape, num_outputs=classes)


def trained(spec: dict, in_shape: tuple[int, ...]) -> nn.Module:
    """A teacher with non-trivial BatchNorm weights and running statistics (train-mode passes
    over shifted, scaled batches), in eval mode."""
    teacher = build(spec, in_shape, CLASSES, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in teacher.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(1 + 0.5 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator))
        for _ in range(3):
            teacher(2 * torch.randn(16, *in_shape, generator=generator) + 1)
    return teacher.eval()


def inputs(in_shape: tuple[int, ...], n: int = 8) -> Tensor:
    return torch.randn(n, *in_shape, generator=torch.Generator().manual_seed(2))


def grown(case: str, extension: str, classes: int = CLASSES, **kwargs) -> tuple:
    t_spec, s_spec, in_shape = CASES[case]
    teacher = trained(t_spec, in_shape)
    student = build(s_spec, in_shape, classes, seed=1)
    slots = grow(teacher, student, extension, **kwargs)
    return teacher, student.eval(), slots, in_shape


def outside(tensor: Tensor, slot: tuple[Tensor, ...]) -> Tensor:
    """Bool mask of the entries of ``tensor`` that are not at ``slot``."""
    mask = torch.ones(tensor.shape, dtype=torch.bool)
    mask[torch.meshgrid(*slot, indexing="ij")] = False
    return mask


@pytest.mark.parametrize("extension", ["zero", "net2net"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("classes", [CLASSES, CLASSES + 2])
def test_zero_and_net2net_preserve_the_teachers_outputs(
    case: str, extension: str, classes: int
) -> None:
    teacher, student, _, in_shape = grown(case, extension, classes)
    x = inputs(in_shape)
    with torch.no_grad():
        expected, found = teacher(x), student(x)
    assert (found[:, :CLASSES] - expected).abs().max() < 1e-5
    assert torch.equal(found[:, CLASSES:], torch.zeros(len(x), classes - CLASSES))
    # a student left at its own initialisation is far from the teacher: the check can fail
    fresh = build(CASES[case][1], in_shape, classes, seed=1).eval()
    assert (fresh(x)[:, :CLASSES] - expected).abs().max() > 1e-2
    if case == "cnn_bn":  # the statistics to preserve are not the identity
        assert (teacher[1].running_var - 1).abs().min() > 1e-3


def new_rows_moved(before: dict, after: dict, slots: dict) -> float:
    """The fraction of new units (rows of the weight tensors outside the teacher's slot: a new
    unit's incoming weights) whose weights moved by over 1e-6 relative."""
    moved, rows = 0, 0
    for key, slot in slots.items():
        if before[key].dim() < 2:
            continue
        new = torch.ones(len(before[key]), dtype=torch.bool)
        new[slot[0]] = False
        change = (after[key][new] - before[key][new]).flatten(1).norm(dim=1)
        scale = before[key][new].flatten(1).norm(dim=1).clamp(min=1e-12)
        moved += int((change > 1e-6 * scale).sum())
        rows += int(new.sum())
    return moved / rows


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("classes", [CLASSES, CLASSES + 2])
def test_zero_out_preserves_the_teachers_outputs_and_starts_new_units_at_their_init(
    case: str, classes: int
) -> None:
    teacher, student, slots, in_shape = grown(case, "zero_out", classes)
    x = inputs(in_shape)
    with torch.no_grad():
        assert (student(x)[:, :CLASSES] - teacher(x)).abs().max() < 1e-5
    first = next(key for key, value in student.state_dict().items() if value.dim() >= 2)
    fresh = build(CASES[case][1], in_shape, classes, seed=1).state_dict()[first]
    new = outside(fresh, slots[first])
    assert torch.equal(student.state_dict()[first][new], fresh[new])  # the student's own init
    assert fresh[new].abs().min() > 0


@pytest.mark.parametrize("case", list(CASES))
def test_new_units_train_under_zero_out_and_stay_zero_under_zero(case: str) -> None:
    """After 20 Adam steps on random data, zero_out's new units have moved and zero's have
    not: under zero every gradient on a new unit is exactly 0. (A new ReLU unit whose random
    incoming weights leave it dead on every input cannot train either: 1 of cnn's 15 here.)"""
    for extension, expected in (("zero_out", 0.8), ("zero", 0.0)):
        _, student, slots, in_shape = grown(case, extension)
        before = {k: v.clone() for k, v in student.state_dict().items()}
        student.train()
        optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
        data = torch.Generator().manual_seed(3)
        for _ in range(20):
            x = torch.randn(32, *in_shape, generator=data)
            y = torch.randint(0, CLASSES, (32,), generator=data)
            optimizer.zero_grad()
            nn.functional.cross_entropy(student(x), y).backward()
            optimizer.step()
        moved = new_rows_moved(before, student.state_dict(), slots)
        assert moved > expected if expected else moved == 0.0, (extension, moved)


@pytest.mark.parametrize("extension", ["zero", "net2net"])
def test_new_classes_get_logit_zero_and_shrink_the_old_probabilities(extension: str) -> None:
    new = 4
    teacher, student, _, in_shape = grown("mlp", extension, CLASSES + new)
    x = inputs(in_shape, 32)
    with torch.no_grad():
        z, probabilities = teacher(x), student(x).softmax(1)
    old = probabilities[:, :CLASSES]
    # exp(z_k) / (Σ_j exp(z_j) + c2 − c1), below the teacher's softmax; ratios kept
    assert torch.allclose(old, z.exp() / (z.exp().sum(1, keepdim=True) + new), atol=1e-6)
    assert (old < z.softmax(1)).all()
    assert torch.allclose(old / old.sum(1, keepdim=True), z.softmax(1), atol=1e-6)


@pytest.mark.parametrize("extension", ["zero", "uniform", "net2net"])
@pytest.mark.parametrize("case", list(CASES))
def test_the_teachers_weights_are_at_their_slots(case: str, extension: str) -> None:
    # net2net's equal shares (exact); its default unequal ones: test_growth_training.py
    exact = {"exact": True} if extension == "net2net" else {}
    teacher, student, slots, _ = grown(case, extension, CLASSES + 2, **exact)
    teacher_state, student_state = teacher.state_dict(), student.state_dict()
    assert list(slots) == list(teacher_state)
    split = []
    for key, u in teacher_state.items():
        placed = at_slot(student_state[key], slots[key])
        if extension != "net2net" or u.dim() < 2:  # biases and BatchNorm: no split
            assert torch.equal(placed, u), key
            continue
        # exact net2net divides the weights reading a unit by its k copies: u / w[u] = k
        copies = u / placed
        assert torch.allclose(copies, copies.round(), atol=1e-5), key
        assert (copies.round() >= 1).all(), key
        split.append(int(copies.round().max()))
    if extension == "net2net":
        assert max(split) > 1


@pytest.mark.parametrize("extension", ["zero", "uniform"])
def test_lstm_units_keep_their_index_in_each_gate_block(extension: str) -> None:
    teacher, student, slots, _ = grown("lstm", extension)
    t, s = teacher.lstm, student.lstm
    h_t, h_s = t.hidden_size, s.hidden_size
    gates_t = t.weight_hh_l0.detach().view(4, h_t, h_t)
    gates_s = s.weight_hh_l0.detach().view(4, h_s, h_s)
    assert torch.equal(gates_s[:, :h_t, :h_t], gates_t)
    assert torch.equal(
        s.weight_ih_l0.detach().view(4, h_s, -1)[:, :h_t], t.weight_ih_l0.view(4, h_t, -1)
    )
    for bias in ("bias_ih_l0", "bias_hh_l0"):
        found = getattr(s, bias).detach().view(4, h_s)[:, :h_t]
        assert torch.equal(found, getattr(t, bias).detach().view(4, h_t))
    rows = torch.cat([b * h_s + torch.arange(h_t) for b in range(4)])
    assert torch.equal(slots["lstm.weight_ih_l0"][0], rows)
    if extension == "zero":  # each block's new units are zero, in every gate
        assert torch.equal(gates_s[:, h_t:], torch.zeros(4, h_s - h_t, h_s))


@pytest.mark.parametrize("case", list(CASES))
def test_uniform_new_entries_lie_in_zero_theta(case: str) -> None:
    theta = 0.05
    teacher, student, slots, _ = grown(case, "uniform", CLASSES + 2, theta=theta)
    for key, value in student.state_dict().items():
        if isinstance(student.get_submodule(key.rpartition(".")[0]), nn.BatchNorm2d):
            continue  # new channels are the identity (next test)
        new = value[outside(value, slots[key])]
        assert new.numel() > 0, key
        assert new.min() > 0 and new.max() <= theta, key
        if new.numel() >= 20:
            assert new.max() > theta / 2, key


@pytest.mark.parametrize("extension", ["zero", "uniform"])
def test_new_batchnorm_channels_start_as_the_identity(extension: str) -> None:
    teacher, student, _, _ = grown("cnn_bn", extension)
    for index in (1, 5):
        t, s = teacher[index], student[index]
        new = slice(t.num_features, None)
        width = s.num_features - t.num_features
        for name, value in (("weight", 1), ("bias", 0), ("running_mean", 0), ("running_var", 1)):
            assert torch.equal(getattr(s, name)[new].detach(), torch.full((width,), float(value)))


def test_net2net_batchnorm_channels_of_the_outputs_start_as_the_identity() -> None:
    # the model's output channels duplicate nothing, so their BatchNorm has nothing to copy
    teacher = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    student = nn.Sequential(nn.Conv2d(1, 4, 1), nn.BatchNorm2d(4))
    with torch.no_grad():
        teacher[1].running_var.fill_(3.0)
        student[1].running_var.fill_(5.0)
    grow(teacher, student, "net2net")
    assert torch.equal(student[1].running_var, torch.tensor([3.0, 3.0, 1.0, 1.0]))
    assert torch.equal(student[0].weight[2:], torch.zeros(2, 1, 1, 1))


def test_net2net_batchnorm_channels_copy_all_their_sources_statistics() -> None:
    teacher, student, _, _ = grown("cnn_bn", "net2net")
    conv_t, conv_s, bn_t, bn_s = teacher[0], student[0], teacher[1], student[1]
    for j in range(conv_t.out_channels, conv_s.out_channels):
        same = [
            i for i in range(conv_t.out_channels) if torch.equal(conv_s.weight[j], conv_t.weight[i])
        ]
        assert len(same) == 1
        for name in ("weight", "bias", "running_mean", "running_var"):
            assert getattr(bn_s, name)[j] == getattr(bn_t, name)[same[0]], (j, name)


def test_net2net_noise_moves_only_the_duplicates_and_the_seed_sets_the_draw() -> None:
    teacher, quiet, _, in_shape = grown("mlp", "net2net", seed=3)
    _, noisy, slots, _ = grown("mlp", "net2net", seed=3, noise=1e-3)
    _, other, _, _ = grown("mlp", "net2net", seed=4)
    w_quiet, w_noisy = quiet[1].weight.detach(), noisy[1].weight.detach()
    assert torch.equal(w_noisy[:5], teacher[1].weight.detach())
    assert 0 < (w_noisy[5:] - w_quiet[5:]).abs().max() < 1e-2
    assert not torch.equal(quiet[1].weight, other[1].weight)
    x = inputs(in_shape)
    with torch.no_grad():
        assert 0 < (noisy(x) - teacher(x)).abs().max() < 0.1


def test_scratch_leaves_the_students_default_initialisation() -> None:
    t_spec, s_spec, in_shape = CASES["cnn_bn"]
    teacher = trained(t_spec, in_shape)
    student, default = (build(s_spec, in_shape, CLASSES + 2, seed=5) for _ in range(2))
    slots = grow(teacher, student, "scratch")
    for key, value in default.state_dict().items():
        assert torch.equal(student.state_dict()[key], value), key
    zero_slots = grow(teacher, copy.deepcopy(student), "zero")
    assert slots.keys() == zero_slots.keys()
    for key, slot in slots.items():
        assert all(torch.equal(a, b) for a, b in zip(slot, zero_slots[key], strict=True))


def test_a_grown_input_is_read_at_the_leading_features() -> None:
    # mlp 6×6×1 → 8×8×3: the teacher's columns read the first 36 values of the flat image
    teacher = trained({"name": "mlp", "hidden": [5]}, (1, 6, 6))
    student = build({"name": "mlp", "hidden": [9]}, (3, 8, 8), CLASSES, seed=1)
    grow(teacher, student, "zero")
    x = inputs((3, 8, 8))
    with torch.no_grad():
        assert (student(x) - teacher(x.flatten(1)[:, :36].view(-1, 1, 6, 6))).abs().max() < 1e-5
    # lstm 5×6×1 → 5×8×3: the teacher reads channel 0, columns 0–5 of every row
    teacher = trained({"name": "lstm", "hidden": 4}, (1, 5, 6))
    student = build({"name": "lstm", "hidden": 7}, (3, 5, 8), CLASSES, seed=1)
    grow(teacher, student, "net2net")
    with torch.no_grad():
        assert (
            student(inputs((3, 5, 8))) - teacher(inputs((3, 5, 8))[:, :1, :, :6])
        ).abs().max() < 1e-5


def test_a_cnn_keeps_the_function_for_more_channels_not_for_a_bigger_image() -> None:
    teacher = trained({"name": "cnn", "channels": [2, 3], "hidden": 4}, (1, 8, 8))
    wider = build({"name": "cnn", "channels": [4, 5], "hidden": 6}, (3, 8, 8), CLASSES, 1)
    grow(teacher, wider, "zero")
    x = inputs((3, 8, 8))
    with torch.no_grad():
        assert (wider.eval()(x) - teacher(x[:, :1])).abs().max() < 1e-6
    bigger = build({"name": "cnn", "channels": [4, 5], "hidden": 6}, (1, 12, 12), CLASSES, 1)
    grow(teacher, bigger, "zero")
    x = inputs((1, 8, 8))
    padded = nn.functional.pad(x, (0, 4, 0, 4))
    with torch.no_grad():  # the docstring's "does not, on any image": neither padded nor cropped
        assert (bigger.eval()(padded) - teacher(x)).abs().max() > 1e-4
        big = inputs((1, 12, 12))
        assert (bigger(big) - teacher(big[:, :, :8, :8])).abs().max() > 1e-4


def test_a_grown_cnn_grid_sits_at_the_top_left_of_each_channel() -> None:
    # 8×8 → 12×12 inputs: 2×2 → 3×3 positions per channel after two poolings
    teacher = trained({"name": "cnn", "channels": [2, 3], "hidden": 4}, (1, 8, 8))
    student = build({"name": "cnn", "channels": [4, 5], "hidden": 6}, (3, 12, 12), CLASSES, 1)
    slots = grow(teacher, student, "zero")
    w_t, w_s = teacher[7].weight.detach(), student[7].weight.detach()
    grid_s = w_s.view(6, 5, 3, 3)
    assert torch.equal(grid_s[:4, :3, :2, :2], w_t.view(4, 3, 2, 2))
    assert grid_s[:4, :3, 2].abs().sum() == 0 and grid_s[:4, 3:].abs().sum() == 0
    columns = torch.tensor(
        [c * 9 + h * 3 + w for c in range(3) for h in range(2) for w in range(2)]
    )
    assert torch.equal(slots["7.weight"][1], columns)
    assert torch.equal(slots["0.weight"][1], torch.tensor([0]))  # input channel 0 of 3


def mlp_spec(*hidden: int) -> dict:
    return {"name": "mlp", "hidden": list(hidden)}


@pytest.mark.parametrize(
    ("teacher", "student", "message"),
    [
        (build(mlp_spec(5), (4,), 3, 0), build(mlp_spec(3), (4,), 3, 0), r"'1\.weight'.* 3 in"),
        (build(mlp_spec(5), (4,), 3, 0), build(mlp_spec(5), (4,), 2, 0), r"'3\.weight'.*out_f"),
        (build(mlp_spec(5), (9,), 3, 0), build(mlp_spec(5), (4,), 3, 0), r"'1\.weight'.*in_f"),
        (
            build(mlp_spec(5), (1, 8, 8), 3, 0),
            build({"name": "cnn", "channels": [2]}, (1, 8, 8), 3, 0),
            "module '0' is Flatten in the teacher, module '0' is Conv2d",
        ),
        (build(mlp_spec(5), (4,), 3, 0), build(mlp_spec(5, 5), (4,), 3, 0), "only the student"),
        (
            build({"name": "cnn", "channels": [2]}, (1, 8, 8), 3, 0),
            build({"name": "cnn", "channels": [2], "batch_norm": True}, (1, 8, 8), 3, 0),
            "module '1' is ReLU in the teacher, module '1' is BatchNorm2d",
        ),
        (
            build({"name": "lstm", "hidden": 6}, (1, 4, 4), 3, 0),
            build({"name": "lstm", "hidden": 5}, (1, 4, 4), 3, 0),
            r"'lstm\.weight_hh_l0'.*5 in the student",
        ),
        (
            nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2)),
            nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 2)),
            r"module '1' \(LayerNorm\) is not supported",
        ),
        (
            nn.Sequential(nn.Linear(4, 3), nn.Softmax(1), nn.Linear(3, 2)),
            nn.Sequential(nn.Linear(4, 5), nn.Softmax(1), nn.Linear(5, 2)),
            r"module '1' \(Softmax\) is not supported",
        ),
        (
            nn.Sequential(nn.Conv2d(1, 2, 3)),
            nn.Sequential(nn.Conv2d(1, 4, 5)),
            r"Conv2d '0': kernel_size \(3, 3\) in the teacher, \(5, 5\)",
        ),
        (
            nn.Sequential(nn.Linear(4, 3, bias=False)),
            nn.Sequential(nn.Linear(4, 3)),
            r"tensor '0\.bias' of the student",
        ),
        (nn.LSTM(3, 4, bidirectional=True), nn.LSTM(3, 6, bidirectional=True), "bidirectional"),
    ],
)
def test_mismatched_or_unsupported_pairs_are_refused_by_name(
    teacher: nn.Module, student: nn.Module, message: str
) -> None:
    before = copy.deepcopy(student.state_dict())
    with pytest.raises(ValueError, match=message):
        grow(teacher, student, "zero")
    assert all(torch.equal(v, before[k]) for k, v in student.state_dict().items())


def test_bad_settings_are_refused() -> None:
    teacher, student = build(mlp_spec(3), (4,), 2, 0), build(mlp_spec(5), (4,), 2, 0)
    with pytest.raises(ValueError, match="unknown extension 'ones'"):
        grow(teacher, student, "ones")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="theta"):
        grow(teacher, student, "uniform", theta=0)
    with pytest.raises(ValueError, match="only net2net"):
        grow(teacher, student, "zero", noise=0.1)
    with pytest.raises(ValueError, match="noise"):
        grow(teacher, student, "net2net", noise=-1.0)


def test_lstm_reads_the_rows_of_an_image() -> None:
    torch.manual_seed(0)
    model = lstm((2, 5, 3), 4, hidden=6)
    assert isinstance(model, RowLSTM)
    x = inputs((2, 5, 3))
    steps = torch.cat([x[:, 0], x[:, 1]], dim=2)  # (N, H, C·W): row t of both channels
    outputs, _ = model.lstm(steps)
    assert torch.equal(model(x), model.head(outputs[:, -1]))
    assert models.build({"name": "lstm", "hidden": 3}, in_shape=(1, 28, 28), num_outputs=10)(
        torch.zeros(2, 1, 28, 28)
    ).shape == (2, 10)
    with pytest.raises(ValueError, match="in_shape"):
        lstm((64,), 2)
    with pytest.raises(ValueError, match="hidden"):
        lstm((1, 4, 4), 2, hidden=0)


def test_cnn_batch_norm_sits_between_each_conv_and_its_relu() -> None:
    torch.manual_seed(0)
    plain = cnn((1, 8, 8), 3, channels=(2, 3), hidden=4)
    torch.manual_seed(0)
    normed = cnn((1, 8, 8), 3, channels=(2, 3), hidden=4, batch_norm=True)
    kinds = [type(m).__name__ for m in normed]
    assert kinds[:8] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] * 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain)
    # a convolution right before a batch norm has no bias (its gradient would be zero up to
    # rounding); the first is drawn first either way
    assert [m.bias is None for m in normed if isinstance(m, nn.Conv2d)] == [True, True]
    assert all(m.bias is not None for m in plain if isinstance(m, nn.Conv2d))
    assert torch.equal(normed[0].weight, plain[0].weight)
    with pytest.raises(ValueError, match="batch_norm"):
        cnn((1, 8, 8), 3, batch_norm="yes")  # type: ignore[arg-type]
