"""Growing a trained model into a bigger one (SPEC §1.5, anti-distillation): the teacher's
weights keep their slots in the student's tensors."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from crossdistill.models.mlp import ACTIVATIONS

Slot = tuple[Tensor, ...]
"""Where a teacher tensor sits in the student's tensor of the same name: one 1-D int64 index
tensor per dimension (``w[u]`` is ``at_slot(w, slot)``, of the teacher tensor's shape)."""

Slots = Mapping[str, Slot]
"""Slots by parameter or buffer name (``state_dict`` keys shared by teacher and student)."""


def at_slot(tensor: Tensor, slot: Slot) -> Tensor:
    """The entries of ``tensor`` at ``slot``: ``w[u]``, differentiable in ``tensor``."""
    for dim, index in enumerate(slot):
        tensor = tensor.index_select(dim, index.to(tensor.device))
    return tensor


def placed(model: nn.Module, slots: Slots) -> dict[str, Tensor]:
    """``model``'s tensors at ``slots`` (state-dict key → w[u], a detached copy of the teacher
    tensor's shape). Taken right after `grow` with any extension but ``scratch``, this is the
    image of the teacher that growth wrote: u itself, except the weights net2net divided among
    a unit's copies (u / k) — the anchor a function-preserving growth starts exactly at."""
    state = model.state_dict()
    return {key: at_slot(state[key], slot).detach().clone() for key, slot in slots.items()}


Extension = Literal["zero", "zero_out", "uniform", "scratch", "net2net"]
EXTENSIONS: tuple[str, ...] = ("zero", "zero_out", "uniform", "scratch", "net2net")
"""The ways `grow` fills the student's entries that hold no teacher weight."""

_LAYERS = (nn.Linear, nn.Conv2d, nn.BatchNorm2d, nn.LSTM)
"""The layers `grow` widens, by exact type."""

_PASSIVE = (
    *ACTIVATIONS.values(),
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.Flatten,
    nn.Dropout,
    nn.Identity,
)
"""Parameter-free layers acting on each feature (or channel) alone, which growth passes through."""


def grow(
    teacher: nn.Module,
    student: nn.Module,
    extension: Extension = "zero",
    *,
    theta: float = 0.1,
    noise: float = 0.0,
    seed: int = 0,
) -> Slots:
    """Write the teacher's weights into the bigger ``student`` in place (φ of SPEC §1.5) and
    return the slot of every teacher tensor (``state_dict`` key → `Slot`).

    ``student`` is the bigger model already built: the same architecture (the same modules under
    the same names, e.g. the same registered spec) with wider layers (``hidden``, ``channels``),
    more outputs (``num_outputs``) or a bigger input (``in_shape``). Its layers are read as a
    chain in the order they are registered (every model of this zoo: ``mlp``, ``cnn`` with or
    without ``batch_norm``, ``lstm``): ``Linear``, ``Conv2d`` (kernel, stride, padding, dilation
    as the teacher's, no groups), ``BatchNorm2d`` after a convolution, one-directional ``LSTM``
    without projections, and the parameter-free layers that act per feature between them
    (activations, pooling, ``Flatten``, ``Dropout``).

    Slots: in every dimension of a Linear, Conv2d or BatchNorm2d tensor the teacher's entries
    sit at the leading indices: teacher unit i is student unit i, teacher class k is student
    class k, teacher input feature i is student input feature i. Two dimensions are not one
    leading block:

    - an LSTM's gate rows (``weight_ih_l*``, ``weight_hh_l*``, ``bias_*``, four blocks i, f, g,
      o of ``hidden_size`` rows each): teacher unit j of gate block b is row ``b·H_t + j`` in the
      teacher and ``b·H_s + j`` in the student;
    - the Linear after a convolution's ``Flatten`` reads features (c, h, w): teacher feature
      (c, h, w) is student feature (c, h, w), i.e. the teacher's channels lead and, when the
      spatial size grew (a bigger image input to a ``cnn``), its H_t×W_t grid sits at the
      top-left corner of each channel's H_s×W_s grid. A grown grid is read as square from its
      number of positions (the images of this zoo are square): one whose counts are not
      squares is refused, a non-square one whose counts happen to be squares is misplaced.

    A grown input (``in_shape`` 28×28×1 → 32×32×3, 14×14 → 28×28): the first layer's teacher
    weights read the student's leading input features: its leading input channels for a
    ``cnn`` (channel 0 of 3), the leading C_t·W_t values of each row (channel 0) for an
    ``lstm``, and the leading n_1 values of the flattened image for an ``mlp`` (for an image
    that is not a spatial corner). Map the teacher's inputs into the student's with
    `input_map` (ψ). What is preserved: an ``mlp`` or ``lstm`` student gives the teacher's
    outputs on those leading features, and so does a ``cnn`` whose input grew in channels
    only. A ``cnn`` given a bigger image does not, on any image: where the teacher's grid ends,
    its second convolution reads zero padding while the student's reads first-layer features
    there (at least their ReLU'd biases), and the dense layer reads the top-left corner of a
    grid computed from those (an 8×8 teacher grown to 12×12 differs by about 0.5 % of its
    largest logit on the zero-padded image, 1.4 % on its top-left crop).

    Extensions, for the entries outside the slots:

    - ``"zero"``: 0. Function-preserving: new units output 0 and nothing reads them, so in eval
      mode the student gives the teacher's outputs (on a grown input: those of the teacher on
      the student input's leading features, as stated above). What trains: the teacher's
      entries (and the rows of new classes) only. A new unit's incoming weights get the
      gradient of its output, which is 0 while nothing reads it, and the weights reading it
      get the gradient of its activation, which is 0 while its incoming weights are (ReLU,
      tanh, BatchNorm, LSTM: exactly; sigmoid units, whose activation at 0 is ½, escape); so
      the new units stay exactly 0 under any optimizer and the student trains as a network of
      the teacher's width.
    - ``"zero_out"``: the weights reading a new unit (a new feature of a layer's input) are 0;
      every other new entry (a new unit's incoming weights and bias, a new class's row) keeps
      the student's own initialisation. Function-preserving as ``zero`` (nothing reads the new
      units, and new classes are extra logits), and the new units train: their activations are
      not 0, so the weights reading them get a non-zero gradient at the first step. On a grown
      input the weights reading the new input features are 0 too.
    - ``"uniform"``: independent draws from U[0, ``theta``] (not function-preserving; every
      entry trains).
    - ``"scratch"``: nothing is written: the student keeps the weights it was built with, its
      default initialisation (the baseline); the slots returned are still where the teacher's
      weights would sit.
    - ``"net2net"``: function-preserving widening (Chen et al., 2016): each new hidden unit
      (Linear row, Conv2d channel, LSTM unit in all four gates) duplicates a teacher unit
      drawn uniformly at random with ``seed``: its incoming weights and bias are the teacher
      unit's, and the weights reading a unit with k copies in the student (the original and
      its duplicates) are the teacher's divided by k, for the original as for the copies.
      So under net2net a slot holds the teacher's weight except for the weights reading a
      duplicated unit, which hold the teacher's / k. New input features, new positions of a
      grown grid and new classes duplicate nothing: their weights are 0. ``noise`` > 0 adds
      N(0, ``noise``²) draws to the incoming weights and biases of the duplicates (not to the
      teacher's units, not to BatchNorm), breaking their symmetry at the price of exactness;
      the default 0 keeps the function exactly, up to float rounding (divisions by k and
      sums in another order: about 1e-7 relative in float32).

    BatchNorm2d: a new channel starts as the identity (weight 1, bias 0, running mean 0,
    running variance 1) under ``zero`` and ``uniform``; under ``net2net`` it copies all four of
    the duplicated channel's (weight, bias, running mean and variance), so it normalises its
    copy of the channel exactly as the teacher does. ``num_batches_tracked`` is the teacher's.

    More classes (c2 > c1): the old classes' rows of the output layer keep their weights and
    biases, the new rows follow the extension. Under ``zero`` and ``net2net`` (with no noise)
    the old classes' logits z_1 … z_c1 are kept exactly (up to the rounding of products of
    another shape, about 1e-7 relative in float32) and every new class gets logit 0, so
    the softmax over the c2 classes is *not* the teacher's: old class k gets
    exp(z_k) / (Σ_j exp(z_j) + c2 − c1), less than the teacher's exp(z_k) / Σ_j exp(z_j);
    the ratios between old classes, and so the softmax of the old logits alone, are the
    teacher's. Under ``uniform`` the new classes' logits are those of U[0, θ] rows, and the old
    ones move too when hidden layers grew (their new columns are U[0, θ] draws).

    Args:
        teacher: the trained model; read only.
        student: the bigger model, written in place (except under ``"scratch"``).
        extension: ``"zero"``, ``"zero_out"``, ``"uniform"``, ``"scratch"`` or ``"net2net"``.
        theta: θ > 0 of ``"uniform"``, in weight units; unused otherwise.
        noise: σ ≥ 0 of ``"net2net"``'s noise, in weight units; must be 0 otherwise.
        seed: seeds the uniform draws, net2net's choice of duplicated units and its noise.

    Returns:
        For every teacher tensor (parameters and buffers), its `Slot` in the student's tensor of
        the same name.

    Raises:
        ValueError: an unknown extension or bad θ / noise; architectures that differ (a module
            missing or of another type, other kernel sizes, another number of LSTM layers); a
            student smaller than the teacher anywhere; a module grow does not know. The message
            names the module or tensor and what was found.
    """
    if extension not in EXTENSIONS:
        expected = ", ".join(EXTENSIONS)
        raise ValueError(f"unknown extension {extension!r}; expected one of {expected}")
    if extension == "uniform" and not (_is_number(theta) and 0 < theta < math.inf):
        raise ValueError(f"theta: expected a finite number > 0, got {theta!r}")
    if not (_is_number(noise) and 0 <= noise < math.inf):
        raise ValueError(f"noise: expected a finite number >= 0, got {noise!r}")
    if noise and extension != "net2net":
        raise ValueError(f"noise: only net2net adds noise; got noise={noise} with {extension!r}")
    generator = torch.Generator().manual_seed(seed)
    plan = _plan(teacher, student, duplicate=generator if extension == "net2net" else None)
    teacher_state, student_state = teacher.state_dict(), student.state_dict()
    slots = {key: tuple(axis.slot for axis in plan[key].axes) for key in teacher_state}
    if extension == "scratch":
        return slots
    values = {
        key: _value(teacher_state[key], value, plan[key], extension, theta, noise, generator)
        for key, value in student_state.items()
    }
    student.load_state_dict(values)
    return slots


@dataclass(frozen=True)
class _Axis:
    """One dimension of features: teacher feature i is student feature ``slot[i]``; student
    feature j copies teacher feature ``source[j]`` under net2net, -1 when it copies none."""

    slot: Tensor
    source: Tensor

    def counts(self) -> Tensor:
        """(n_t,) the number of student features copying each teacher feature."""
        return torch.bincount(self.source[self.source >= 0], minlength=len(self.slot))

    def duplicates(self) -> Tensor:
        """(n_s,) bool: the student features that copy a teacher feature outside its slot."""
        copies = self.source >= 0
        copies[self.slot] = False
        return copies


@dataclass(frozen=True)
class _Tensor:
    """How one tensor grows: its axes, the dimension over the layer's inputs (``reads``, which
    net2net divides by the copies), and BatchNorm's identity value (``fill``; None: weights)."""

    axes: tuple[_Axis, ...]
    reads: int | None = None
    fill: float | None = None


def _units(n_t: int, n_s: int, what: str, duplicate: torch.Generator | None = None) -> _Axis:
    """Leading slots; the new features copy random teacher features with ``duplicate``, else
    none."""
    if n_s < n_t:
        raise ValueError(f"{what}: {n_s} in the student, fewer than the teacher's {n_t}")
    if duplicate is not None:
        new = torch.randint(0, n_t, (n_s - n_t,), generator=duplicate)
    else:
        new = torch.full((n_s - n_t,), -1)
    return _Axis(torch.arange(n_t), torch.cat([torch.arange(n_t), new]))


def _gates(units: _Axis) -> _Axis:
    """The LSTM's 4·H rows (gate blocks i, f, g, o) over ``units``."""
    n_t, n_s = len(units.slot), len(units.source)
    slot = torch.cat([b * n_s + units.slot for b in range(4)])
    new = units.source < 0
    source = torch.cat([torch.where(new, -1, b * n_t + units.source) for b in range(4)])
    return _Axis(slot, source)


def _flattened(channels: _Axis, grid_t: tuple[int, int], grid_s: tuple[int, int]) -> _Axis:
    """The features (c, h, w) of flattened channels, the teacher's grid at the top-left."""
    (ht, wt), (hs, ws) = grid_t, grid_s
    h, w = torch.arange(ht)[:, None], torch.arange(wt)[None, :]
    slot = (channels.slot[:, None, None] * (hs * ws) + h * ws + w).reshape(-1)
    source = channels.source[:, None, None]
    h, w = torch.arange(hs)[:, None], torch.arange(ws)[None, :]
    inside = (source >= 0) & (h < ht) & (w < wt)
    return _Axis(slot, torch.where(inside, source * (ht * wt) + h * wt + w, -1).reshape(-1))


def _same(n: int) -> _Axis:
    return _Axis(torch.arange(n), torch.arange(n))


def _plan(teacher: nn.Module, student: nn.Module, duplicate: torch.Generator | None) -> dict:
    """`_Tensor` by ``state_dict`` key for every tensor of the pair, checked to fit both."""
    layers = _layers(teacher, student)
    producing = [name for name, t, _ in layers if not isinstance(t, nn.BatchNorm2d)]
    last = producing[-1] if producing else None
    plan: dict[str, _Tensor] = {}
    current: _Axis | None = None  # the features the next layer reads; None: the model's input
    channels = False  # whether ``current`` are a convolution's channels
    for name, t, s in layers:
        label = f"{type(t).__name__} {name!r}"
        key = f"{name}." if name else ""
        # the model's outputs (classes) duplicate nothing
        units = None if name == last else duplicate
        if isinstance(t, nn.Linear):
            inputs = _linear_inputs(label, key, current, channels, t.in_features, s.in_features)
            what = f"{label} ('{key}weight') out_features"
            out = _units(t.out_features, s.out_features, what, units)
            plan[f"{key}weight"] = _Tensor((out, inputs), reads=1)
            if t.bias is not None:
                plan[f"{key}bias"] = _Tensor((out,))
            current, channels = out, False
        elif isinstance(t, nn.Conv2d):
            for attr in ("kernel_size", "stride", "padding", "dilation", "groups", "padding_mode"):
                if getattr(t, attr) != getattr(s, attr):
                    raise ValueError(
                        f"{label}: {attr} {getattr(t, attr)!r} in the teacher, "
                        f"{getattr(s, attr)!r} in the student"
                    )
            if t.groups != 1:
                raise ValueError(f"{label}: grouped convolutions (groups={t.groups}) do not grow")
            what = f"{label} ('{key}weight') in_channels"
            if current is None:
                inputs = _units(t.in_channels, s.in_channels, what)
            else:
                inputs = _follow(what, current, channels, True, t.in_channels, s.in_channels)
            what = f"{label} ('{key}weight') out_channels"
            out = _units(t.out_channels, s.out_channels, what, units)
            kernel = tuple(_same(k) for k in t.weight.shape[2:])
            plan[f"{key}weight"] = _Tensor((out, inputs, *kernel), reads=1)
            if t.bias is not None:
                plan[f"{key}bias"] = _Tensor((out,))
            current, channels = out, True
        elif isinstance(t, nn.BatchNorm2d):
            for attr in ("eps", "momentum", "affine", "track_running_stats"):
                if getattr(t, attr) != getattr(s, attr):
                    raise ValueError(
                        f"{label}: {attr} {getattr(t, attr)!r} in the teacher, "
                        f"{getattr(s, attr)!r} in the student"
                    )
            if current is None:
                raise ValueError(f"{label}: normalises the model's input, not a Conv2d's output")
            what = f"{label} ('{key}running_mean') num_features"
            axis = _follow(what, current, channels, True, t.num_features, s.num_features)
            identity = {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0}
            for tensor, fill in identity.items():
                if getattr(t, tensor) is not None:
                    plan[f"{key}{tensor}"] = _Tensor((axis,), fill=fill)
            if t.num_batches_tracked is not None:
                plan[f"{key}num_batches_tracked"] = _Tensor(())
        else:  # nn.LSTM
            for attr in ("num_layers", "bias", "batch_first", "bidirectional", "proj_size"):
                if getattr(t, attr) != getattr(s, attr):
                    raise ValueError(
                        f"{label}: {attr} {getattr(t, attr)!r} in the teacher, "
                        f"{getattr(s, attr)!r} in the student"
                    )
            if t.bidirectional or t.proj_size:
                raise ValueError(f"{label}: bidirectional LSTMs and projections do not grow")
            what = f"{label} ('{key}weight_ih_l0') input_size"
            if current is None:
                inputs = _units(t.input_size, s.input_size, what)
            else:
                inputs = _follow(what, current, channels, False, t.input_size, s.input_size)
            for layer in range(t.num_layers):
                what = f"{label} ('{key}weight_hh_l{layer}') hidden_size"
                output = layer == t.num_layers - 1
                hidden = _units(t.hidden_size, s.hidden_size, what, units if output else duplicate)
                gates = _gates(hidden)
                plan[f"{key}weight_ih_l{layer}"] = _Tensor((gates, inputs), reads=1)
                plan[f"{key}weight_hh_l{layer}"] = _Tensor((gates, hidden), reads=1)
                if t.bias:
                    plan[f"{key}bias_ih_l{layer}"] = _Tensor((gates,))
                    plan[f"{key}bias_hh_l{layer}"] = _Tensor((gates,))
                inputs = hidden
            current, channels = inputs, False
    _check_tensors(teacher.state_dict(), student.state_dict(), plan)
    return plan


def _layers(teacher: nn.Module, student: nn.Module) -> list[tuple[str, nn.Module, nn.Module]]:
    """The (name, teacher layer, student layer) of every layer `grow` widens, in order; a
    ValueError unless both models have the same modules, all of them known."""
    t_modules, s_modules = list(teacher.named_modules()), list(student.named_modules())
    for (t_name, t), (s_name, s) in zip(t_modules, s_modules, strict=False):
        if t_name != s_name or type(t) is not type(s):
            raise ValueError(
                f"mismatched architectures: module {t_name or '(root)'!r} is "
                f"{type(t).__name__} in the teacher, module {s_name or '(root)'!r} is "
                f"{type(s).__name__} in the student"
            )
    if len(t_modules) != len(s_modules):
        longer, extra = max(("teacher", t_modules), ("student", s_modules), key=lambda m: len(m[1]))
        name, module = extra[min(len(t_modules), len(s_modules))]
        raise ValueError(
            f"mismatched architectures: only the {longer} has module {name!r} "
            f"({type(module).__name__})"
        )
    layers = []
    for name, module in t_modules:
        if type(module) in _LAYERS:
            layers.append((name, module, student.get_submodule(name)))
            continue
        own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        leaf = next(module.children(), None) is None
        if own or (leaf and type(module) not in _PASSIVE):
            raise ValueError(
                f"module {name or '(root)'!r} ({type(module).__name__}) is not supported: grow "
                "widens Linear, Conv2d, BatchNorm2d and LSTM layers and passes activations, "
                "pooling, Flatten and Dropout"
            )
    return layers


def _follow(
    what: str, current: _Axis, channels: bool, wants_channels: bool, n_t: int, n_s: int
) -> _Axis:
    """``current`` if it is what a layer reads (``n_t`` teacher, ``n_s`` student features)."""
    found = (len(current.slot), len(current.source))
    if channels != wants_channels or found != (n_t, n_s):
        given = "channels" if channels else "features"
        raise ValueError(
            f"{what}: reads {n_t} (teacher) and {n_s} (student), but the layer before gives "
            f"{found[0]} and {found[1]} {given}"
        )
    return current


def _linear_inputs(
    label: str, key: str, current: _Axis | None, channels: bool, n_t: int, n_s: int
) -> _Axis:
    what = f"{label} ('{key}weight') in_features"
    if current is None:
        return _units(n_t, n_s, what)
    if not channels:
        return _follow(what, current, channels, False, n_t, n_s)
    c_t, c_s = len(current.slot), len(current.source)
    if n_t % c_t or n_s % c_s:
        raise ValueError(
            f"{what}: {n_t} (teacher) and {n_s} (student) are not multiples of the "
            f"{c_t} and {c_s} channels before"
        )
    p_t, p_s = n_t // c_t, n_s // c_s
    if p_t == p_s:
        return _flattened(current, (1, p_t), (1, p_s))
    side_t, side_s = math.isqrt(p_t), math.isqrt(p_s)
    if side_t**2 != p_t or side_s**2 != p_s:
        raise ValueError(
            f"{what}: {p_t} positions per channel in the teacher, {p_s} in the student; a "
            "grown grid must be square to place the teacher's at its top-left"
        )
    if side_s < side_t:
        raise ValueError(
            f"{what}: a {side_s}×{side_s} grid per channel in the student, smaller than the "
            f"teacher's {side_t}×{side_t}"
        )
    return _flattened(current, (side_t, side_t), (side_s, side_s))


def _check_tensors(
    teacher_state: Mapping[str, Tensor], student_state: Mapping[str, Tensor], plan: dict
) -> None:
    for state, whose, other in (
        (teacher_state, "teacher", "student"),
        (student_state, "student", "teacher"),
    ):
        for key in state:
            if key not in plan:
                raise ValueError(f"tensor {key!r} of the {whose} has no counterpart in the {other}")
    for key, spec in plan.items():
        for state, whose, length in (
            (teacher_state, "teacher", lambda a: len(a.slot)),
            (student_state, "student", lambda a: len(a.source)),
        ):
            if key not in state:
                raise ValueError(f"tensor {key!r} is missing from the {whose}")
            expected = tuple(length(axis) for axis in spec.axes)
            if tuple(state[key].shape) != expected:
                raise ValueError(
                    f"tensor {key!r}: shape {tuple(state[key].shape)} in the {whose}, "
                    f"expected {expected}"
                )


def _value(
    t: Tensor,
    s: Tensor,
    spec: _Tensor,
    extension: str,
    theta: float,
    noise: float,
    generator: torch.Generator,
) -> Tensor:
    """The student's new tensor ``s`` grown from the teacher's ``t``."""
    t = t.to(s.device, s.dtype)
    if t.dim() == 0:
        return t.clone()
    if extension == "net2net":
        value, valid = t, torch.ones((), dtype=torch.bool, device=s.device)
        for dim, axis in enumerate(spec.axes):
            shape = [1] * t.dim()
            shape[dim] = -1
            source = axis.source.to(s.device)
            index = source.clamp(min=0)
            value = value.index_select(dim, index)
            valid = valid & (source >= 0).view(shape)
            if dim == spec.reads:
                copies = axis.counts().to(s.device)[index].clamp(min=1)
                value = value / copies.to(value.dtype).view(shape)
        value = torch.where(valid, value, 0.0 if spec.fill is None else spec.fill)
        if noise and spec.fill is None:
            rows = spec.axes[0].duplicates().to(s.device)
            draws = torch.randn((int(rows.sum()), *value.shape[1:]), generator=generator)
            value[rows] += noise * draws.to(value)
        return value
    if spec.fill is not None:
        value = torch.full_like(s, spec.fill)
    elif extension == "uniform":
        value = (torch.rand(s.shape, generator=generator) * theta).to(s)
    elif extension == "zero_out":
        value = s.clone()
        if spec.reads is not None:  # the entries reading a new input feature
            new = torch.ones(s.shape[spec.reads], dtype=torch.bool, device=s.device)
            new[spec.axes[spec.reads].slot.to(s.device)] = False
            value[(slice(None),) * spec.reads + (new,)] = 0.0
    else:
        value = torch.zeros_like(s)
    index = torch.meshgrid(*(axis.slot.to(s.device) for axis in spec.axes), indexing="ij")
    value[index] = t
    return value


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and not math.isnan(x)
