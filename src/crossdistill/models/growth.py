"""Growing a trained model into a bigger one (anti-distillation, Petrushina et al.,
"Anti-distillation: knowledge transfer from simple model to a complex one"): the teacher's
weights keep their slots in the student's tensors."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
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
    a unit's k copies, which hold the teacher's weight times the original copy's share
    (u / k under ``exact``, u · (1 + ε) / k by default) — the anchor a function-preserving
    growth starts exactly at."""
    state = model.state_dict()
    return {key: at_slot(state[key], slot).detach().clone() for key, slot in slots.items()}


Extension = Literal["zero", "zero_out", "uniform", "scratch", "net2net", "gradmax"]
EXTENSIONS: tuple[str, ...] = ("zero", "zero_out", "uniform", "scratch", "net2net", "gradmax")
"""The ways `grow` fills the student's entries that hold no teacher weight."""

SPLIT = 0.5
"""Standard deviation of net2net's relative split noise ε (dimensionless): a weight w reading a
unit with k copies gives copy i the share w · (1 + ε_i) / k, ε centred over the k copies."""

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
    exact: bool = False,
    batch: tuple[Tensor, Tensor] | None = None,
) -> Slots:
    """Write the teacher's weights into the bigger ``student`` in place (anti-distillation's φ) and
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
      unit's, and each weight w reading a unit with k copies in the student (the original and
      its duplicates) is divided among the k copies, shares that sum to w. By default the
      shares are unequal: copy i gets w · (1 + ε_i) / k, ε_i drawn N(0, `SPLIT`²) with
      ``seed`` independently for every entry of the reading tensor (each row of the next
      layer splits its weight its own way) and centred over the k copies (Σ_i ε_i = 0).
      The copies still compute the same activation, so the function is kept, but the
      gradients of their incoming weights differ in direction, and training separates them
      (with equal shares every optimizer keeps the copies identical forever). ``exact=True``
      gives the equal shares w / k of the original method. So under net2net a slot holds the
      teacher's weight except for the weights reading a duplicated unit, which hold the
      original copy's share. New input features, new positions of a grown grid and new
      classes duplicate nothing: their weights are 0. ``noise`` > 0 adds N(0, ``noise``²)
      draws to the incoming weights and biases of the duplicates (not to the teacher's units,
      not to BatchNorm), at the price of exactness; the default 0 keeps the function exactly,
      up to float rounding (the shares and sums in another order: about 1e-7 relative in
      float32).
    - ``"gradmax"``: GradMax (Evci et al., 2022): ``zero_out``, except the incoming weights of
      the new units of every Linear and Conv2d layer l that is not the model's output layer
      and that a Linear or Conv2d layer l+1 reads (with only activations, BatchNorm2d,
      pooling, Flatten and Dropout between them). Those are chosen to maximise the norm of
      the gradient of the cross-entropy on ``batch`` with respect to the new units' (zero)
      outgoing weights. That gradient is linear in a new unit's incoming weights w on the
      old input features, G(w) = M w, once the path from its pre-activation to layer l+1 is
      linearised: activations, BatchNorm2d and Dropout as the identity, MaxPool2d as the
      AvgPool2d of its kernel, stride and padding. The k new units get the top k right
      singular vectors of M, each signed to make the unit's mean pre-activation over the
      batch ≥ 0 (so that a ReLU after it passes it), all scaled to one norm so that the block
      of their incoming weights has the Frobenius norm of the student's own initialisation
      of that block (the ``zero_out`` block: the same norm budget); their biases and their
      weights on new input features are 0. Units beyond the number of singular values of M
      (min of its rows and the old input features × kernel positions) keep the student's own
      initialisation, as do the new units of an LSTM (its gates make the gradient nonlinear
      in the incoming weights) and of a layer read by an LSTM. So on an ``lstm`` (whose
      only Linear is the output layer) gradmax is ``zero_out``. Nothing reads a new unit, so
      neither a layer's old input features nor the gradient at the next layer's output
      depend on any new unit's incoming weights: one forward and backward pass of the
      ``zero_out`` student over ``batch`` (in its current train or eval mode; its buffers,
      such as BatchNorm's running statistics, are restored after, and no ``.grad`` is left)
      serves every layer. Function-preserving as ``zero_out``.

    BatchNorm2d: a new channel starts as the identity (weight 1, bias 0, running mean 0,
    running variance 1) under ``zero``, ``zero_out``, ``gradmax`` and ``uniform``; under
    ``net2net`` it copies all four of the duplicated channel's (weight, bias, running mean and
    variance), so it normalises its copy of the channel exactly as the teacher does.
    ``num_batches_tracked`` is the teacher's.

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
        extension: ``"zero"``, ``"zero_out"``, ``"uniform"``, ``"scratch"``, ``"net2net"`` or
            ``"gradmax"``.
        theta: θ > 0 of ``"uniform"``, in weight units; unused otherwise.
        noise: σ ≥ 0 of ``"net2net"``'s noise, in weight units; must be 0 otherwise.
        seed: seeds the uniform draws, net2net's choice of duplicated units, its split and its
            noise.
        exact: net2net only: equal shares w / k (the original method, whose copies never
            separate) instead of the default unequal ones.
        batch: gradmax only, and required by it: inputs (N, *in_shape) of the student and their
            int64 class labels (N,), on the student's device.

    Returns:
        For every teacher tensor (parameters and buffers), its `Slot` in the student's tensor of
        the same name.

    Raises:
        ValueError: an unknown extension, bad θ / noise, ``exact`` or ``batch`` given to an
            extension that does not use it, no or a malformed ``batch`` for gradmax;
            architectures that differ (a module missing or of another type, other kernel sizes,
            another number of LSTM layers); a student smaller than the teacher anywhere; a
            module grow does not know. The message names the argument, module or tensor and
            what was found.
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
    if exact and extension != "net2net":
        raise ValueError(
            f"exact: only net2net splits weights; got exact={exact!r} with {extension!r}"
        )
    if batch is not None and extension != "gradmax":
        raise ValueError(f"batch: only gradmax uses a batch; got a batch with {extension!r}")
    data = _checked_batch(batch) if extension == "gradmax" else None
    generator = torch.Generator().manual_seed(seed)
    plan = _plan(teacher, student, duplicate=generator if extension == "net2net" else None)
    teacher_state, student_state = teacher.state_dict(), student.state_dict()
    slots = {key: tuple(axis.slot for axis in plan[key].axes) for key in teacher_state}
    if extension == "scratch":
        return slots
    fill = "zero_out" if extension == "gradmax" else extension
    values = {
        key: _value(teacher_state[key], value, plan[key], fill, theta, noise, exact, generator)
        for key, value in student_state.items()
    }
    student.load_state_dict(values)
    if data is not None:
        student.load_state_dict({**values, **_gradmax(student, plan, data)})
    return slots


def unit_slots(small: nn.Module, big: nn.Module, kept: Mapping[str, Tensor] | None = None) -> Slots:
    """Where each tensor of ``small`` sits in ``big``'s tensor of the same name: the slot maps
    of `grow` (``small`` the teacher, ``big`` the student), with the small model's units of
    hidden layer ``name`` at the big model's units ``kept[name]`` instead of the leading ones.

    Run the other way, the slots restrict: ``placed(big, unit_slots(small, big, kept))`` is
    the state dict of ``small`` made of ``big``'s kept units — their incoming weights and
    biases, the weights between kept units of consecutive layers, and none of a dropped unit's
    outgoing weights (a Conv2d channel read through ``Flatten``: all its positions). A
    BatchNorm2d after a convolution follows its channels.

    Args:
        small: the narrower model, the same architecture as ``big`` (see `grow`).
        big: the wider model.
        kept: hidden Linear or Conv2d layer name → the ``(n_small,)`` distinct int64 indices of
            ``big``'s units (out_features, out_channels) that the small model's units occupy,
            in its order. Layers not named keep the leading units.

    Raises:
        ValueError: the pair as `grow` refuses it; ``kept`` naming a layer that is not a hidden
            Linear or Conv2d layer, or indices that are not distinct, in range and one per unit.
    """
    plan = _plan(small, big, None, kept)
    return {key: tuple(axis.slot for axis in plan[key].axes) for key in small.state_dict()}


def active_new_units(
    teacher: nn.Module,
    start: Mapping[str, Tensor],
    student: nn.Module,
    *,
    tolerance: float = 1e-6,
) -> float | None:
    """The fraction of the student's new units that training moved: how many of the units that
    growth added took part, in [0, 1]; None when the student has no new units.

    The new units are the hidden units beyond the teacher's (Linear out_features, Conv2d
    out_channels, LSTM hidden units, each in all four gate blocks) of every layer but the
    model's output layer (new classes are not units). A new unit is active when its incoming
    weights moved or its outgoing weights moved, each judged alone: ‖after − before‖ >
    ``tolerance`` · max(‖before‖, ‖after‖) over all its entries (Frobenius norms; entries 0
    before and after have not moved). Incoming: its rows in the layer's weight and bias (an
    LSTM unit's four gate rows in ``weight_ih``, ``weight_hh`` and both biases) and its
    BatchNorm2d channel's weight and bias. Outgoing: the entries of the next layer's weight
    that read it (a convolution's channel read through ``Flatten``: the Linear's columns of
    all its positions; an LSTM unit: also its ``weight_hh`` columns). Buffers (BatchNorm's
    running statistics) do not count.

    Args:
        teacher: the model the student was grown from, to tell its units from the new ones.
        start: the student's ``state_dict`` right after `grow` (copies, e.g.
            ``{k: v.clone() for k, v in student.state_dict().items()}``).
        student: the grown model now, e.g. after training.
        tolerance: relative change (dimensionless) above which weights have moved.

    Raises:
        ValueError: the pair as `grow` refuses it; ``start`` missing one of the student's
            parameters or holding it in another shape.
    """
    plan = _plan(teacher, student, None)
    parameters = dict(student.named_parameters())
    for key, value in parameters.items():
        if key not in start or tuple(start[key].shape) != tuple(value.shape):
            found = tuple(start[key].shape) if key in start else "nothing"
            raise ValueError(
                f"start: expected the student's state dict right after grow, with {key!r} of "
                f"shape {tuple(value.shape)}; found {found}"
            )
    units = [axis for axis in _hidden_units(plan) if len(axis.source) > len(axis.slot)]
    if not units:
        return None
    squares = {id(axis): torch.zeros(2, 3, len(axis.source), dtype=torch.float64) for axis in units}
    for key, parameter in parameters.items():
        spec = plan[key]
        before, after = start[key].detach().cpu().double(), parameter.detach().cpu().double()
        for side, dim in enumerate((0, spec.reads)):  # incoming, outgoing
            if dim is None:
                continue
            base, unit = spec.axes[dim].units()
            if id(base) in squares:
                for i, tensor in enumerate((after - before, before, after)):
                    per_feature = tensor.pow(2).movedim(dim, 0).reshape(len(unit), -1).sum(1)
                    squares[id(base)][side, i].index_add_(0, unit, per_feature)
    # (incoming/outgoing, change/before/after, new units)
    norms = torch.cat([squares[id(axis)][:, :, _new(axis)] for axis in units], dim=2).sqrt()
    moved = norms[:, 0] > tolerance * torch.maximum(norms[:, 1], norms[:, 2])
    return float(moved.any(0).double().mean())


def _hidden_units(plan: dict[str, _Tensor]) -> list[_Axis]:
    """The axes of units of every layer but the output layer, in order: the axes of the rows
    of ``plan``'s tensors (a layer's units), but the last (the model's outputs)."""
    rows: list[_Axis] = []
    for spec in plan.values():
        if spec.axes and all(spec.axes[0].units()[0] is not axis for axis in rows):
            rows.append(spec.axes[0].units()[0])
    return rows[:-1]


@dataclass(frozen=True)
class _Axis:
    """One dimension of features: teacher feature i is student feature ``slot[i]``; student
    feature j copies teacher feature ``source[j]`` under net2net, -1 when it copies none.

    An axis derived from a layer's units (an LSTM's gate rows, a convolution's flattened
    channels) names them: student feature j belongs to unit ``unit[j]`` of axis ``base``."""

    slot: Tensor
    source: Tensor
    base: _Axis | None = None
    unit: Tensor | None = None

    def units(self) -> tuple[_Axis, Tensor]:
        """The axis of units this axis's features belong to, and (n_s,) each one's unit."""
        if self.base is None or self.unit is None:
            return self, torch.arange(len(self.source))
        return self.base, self.unit

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


def _units(
    n_t: int,
    n_s: int,
    what: str,
    duplicate: torch.Generator | None = None,
    at: Tensor | None = None,
) -> _Axis:
    """Leading slots, or the student features ``at`` (distinct, one per teacher feature); the
    new features copy random teacher features with ``duplicate``, else none."""
    if n_s < n_t:
        raise ValueError(f"{what}: {n_s} in the student, fewer than the teacher's {n_t}")
    if at is not None:
        at = torch.as_tensor(at)
        if (
            at.shape != (n_t,)
            or at.dtype != torch.int64
            or len(at.unique()) != n_t
            or (n_t and not 0 <= int(at.min()) <= int(at.max()) < n_s)
        ):
            raise ValueError(
                f"{what}: expected {n_t} distinct int64 indices in [0, {n_s}) to place the "
                f"{n_t} units at, found {at.dtype} of shape {tuple(at.shape)}: {at.tolist()}"
            )
        source = torch.full((n_s,), -1)
        source[at] = torch.arange(n_t)
        return _Axis(at, source)
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
    return _Axis(slot, source, units, torch.arange(n_s).repeat(4))


def _flattened(channels: _Axis, grid_t: tuple[int, int], grid_s: tuple[int, int]) -> _Axis:
    """The features (c, h, w) of flattened channels, the teacher's grid at the top-left."""
    (ht, wt), (hs, ws) = grid_t, grid_s
    h, w = torch.arange(ht)[:, None], torch.arange(wt)[None, :]
    slot = (channels.slot[:, None, None] * (hs * ws) + h * ws + w).reshape(-1)
    source = channels.source[:, None, None]
    h, w = torch.arange(hs)[:, None], torch.arange(ws)[None, :]
    inside = (source >= 0) & (h < ht) & (w < wt)
    source = torch.where(inside, source * (ht * wt) + h * wt + w, -1).reshape(-1)
    unit = torch.arange(len(channels.source)).repeat_interleave(hs * ws)
    return _Axis(slot, source, channels, unit)


def _same(n: int) -> _Axis:
    return _Axis(torch.arange(n), torch.arange(n))


def _plan(
    teacher: nn.Module,
    student: nn.Module,
    duplicate: torch.Generator | None,
    kept: Mapping[str, Tensor] | None = None,
) -> dict:
    """`_Tensor` by ``state_dict`` key for every tensor of the pair, checked to fit both; the
    units of Linear or Conv2d layer ``name`` at the student's units ``kept[name]`` (default:
    leading)."""
    kept = dict(kept or {})
    layers = _layers(teacher, student)
    producing = [name for name, t, _ in layers if not isinstance(t, nn.BatchNorm2d)]
    last = producing[-1] if producing else None
    placeable = [name for name, t, _ in layers if isinstance(t, nn.Linear | nn.Conv2d)]
    for name in kept:
        if name not in placeable or name == last:
            hidden = ", ".join(repr(n) for n in placeable if n != last) or "none"
            raise ValueError(
                f"kept: {name!r} is not a hidden Linear or Conv2d layer of the model (the "
                f"output layer's classes are not units); its hidden layers are {hidden}"
            )
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
            out = _units(t.out_features, s.out_features, what, units, kept.get(name))
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
            out = _units(t.out_channels, s.out_channels, what, units, kept.get(name))
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
    exact: bool,
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
                value = _shares(value, dim, axis, None if exact else generator)
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


def _checked_batch(batch: object) -> tuple[Tensor, Tensor]:
    """``batch`` as gradmax reads it: inputs (N, ...) and int64 labels (N,); a ValueError
    naming ``batch`` if it is not a pair of tensors of that kind."""
    if batch is None:
        raise ValueError("batch: gradmax needs a batch (inputs, class labels); got None")
    if not (
        isinstance(batch, tuple | list)
        and len(batch) == 2
        and all(isinstance(part, Tensor) for part in batch)
    ):
        raise ValueError(f"batch: expected a pair of tensors (inputs, labels); got {batch!r}")
    x, y = batch
    if y.dim() != 1 or len(y) != len(x) or y.is_floating_point() or y.is_complex():
        raise ValueError(
            f"batch: expected integer labels of shape ({len(x)},) for {len(x)} inputs; got "
            f"{y.dtype} labels of shape {tuple(y.shape)}"
        )
    return x, y.long()


_Target = tuple[str, nn.Module, list[nn.Module], nn.Module]
"""A layer gradmax sets: (name, layer l, the modules between it and l+1, layer l+1)."""


def _gradmax(
    student: nn.Module, plan: dict[str, _Tensor], batch: tuple[Tensor, Tensor]
) -> dict[str, Tensor]:
    """GradMax's weights and biases (state-dict key → tensor) for the Linear and Conv2d layers
    of the ``zero_out``-grown ``student`` that it sets (see `grow`)."""
    targets = _gradmax_targets(student, plan)
    if not targets:
        return {}
    values = {}
    for (name, layer, between, reader), (x, g) in zip(
        targets, _gradmax_pass(student, targets, batch), strict=True
    ):
        key = f"{name}." if name else ""
        rows, inputs = plan[f"{key}weight"].axes[:2]
        weight = layer.weight.detach().clone()
        new = _new(rows).to(weight.device)[:, None]
        old = inputs.slot.to(weight.device)
        z = _pseudo_units(layer, x[:, old])
        mean = z.transpose(0, 1).flatten(1).mean(1)  # (B,) each pseudo-unit's mean
        for module in between:
            z = _linearised(module, z)
        directions = _directions(_outgoing_gradient(reader, z, g), mean, weight[new, old])
        units = new[: len(directions)]
        weight[units, old] = directions.view(len(units), len(old), *weight.shape[2:])
        values[f"{key}weight"] = weight
        if layer.bias is not None:
            values[f"{key}bias"] = layer.bias.detach().index_fill(0, units[:, 0], 0.0)
    return values


def _new(axis: _Axis) -> Tensor:
    """(n_s − n_t,) the student features of ``axis`` outside the teacher's slot, in order."""
    new = torch.ones(len(axis.source), dtype=torch.bool)
    new[axis.slot] = False
    return new.nonzero()[:, 0]


def _gradmax_targets(student: nn.Module, plan: dict[str, _Tensor]) -> list[_Target]:
    """The Linear and Conv2d layers with new units that a Linear or Conv2d reads, each with the
    modules up to that reader (read as a chain of leaf modules in ``named_modules`` order)."""
    leaves = [(n, m) for n, m in student.named_modules() if next(m.children(), None) is None]
    targets = []
    for i, (name, layer) in enumerate(leaves):
        key = f"{name}.weight" if name else "weight"
        if type(layer) not in (nn.Linear, nn.Conv2d) or not len(_new(plan[key].axes[0])):
            continue
        between: list[nn.Module] = []
        for _, module in leaves[i + 1 :]:
            if type(module) in (nn.Linear, nn.Conv2d):
                targets.append((name, layer, between, module))
            if type(module) in (nn.Linear, nn.Conv2d, nn.LSTM):
                break
            between.append(module)
    return targets


def _gradmax_pass(
    student: nn.Module, targets: list[_Target], batch: tuple[Tensor, Tensor]
) -> list[tuple[Tensor, Tensor]]:
    """For each target: its layer's input x_l and the gradient g of the mean cross-entropy on
    ``batch`` at its reader's output (pre-activation), both detached, from one forward and
    backward pass of ``student`` in its current mode; its state dict is restored after."""
    x, y = batch
    state = {key: value.clone() for key, value in student.state_dict().items()}
    seen: dict[nn.Module, tuple[Tensor, Tensor]] = {}

    def keep(module: nn.Module, args: tuple, output: Tensor) -> None:
        seen[module] = (args[0], output)

    modules = {module for _, layer, _, reader in targets for module in (layer, reader)}
    hooks = [module.register_forward_hook(keep) for module in modules]
    try:
        with torch.enable_grad():
            loss = F.cross_entropy(student(x), y)
            readers = list({reader: None for *_, reader in targets})
            grads = torch.autograd.grad(loss, [seen[reader][1] for reader in readers])
    finally:
        for hook in hooks:
            hook.remove()
        student.load_state_dict(state)
    grad = dict(zip(readers, grads, strict=True))
    return [(seen[layer][0].detach(), grad[reader]) for _, layer, _, reader in targets]


def _pseudo_units(layer: nn.Module, x: Tensor) -> Tensor:
    """(N, B, ...) the pre-activations of B pseudo-units of ``layer`` (Linear or Conv2d) on
    its old inputs ``x`` (N, in_old, ...): unit b has the b-th standard basis vector as its
    incoming weights (B = in_old, or in_old · kh · kw for a convolution) and no bias."""
    if isinstance(layer, nn.Linear):
        return x
    kernel = tuple(layer.kernel_size)
    n = x.shape[1] * math.prod(kernel)
    basis = torch.eye(n, dtype=x.dtype, device=x.device).view(n, x.shape[1], *kernel)
    return F.conv2d(x, basis, None, layer.stride, layer.padding, layer.dilation)


def _linearised(module: nn.Module, z: Tensor) -> Tensor:
    """``z`` (N, B, ...) of B pseudo-units through ``module``'s linear stand-in, unit by unit:
    MaxPool2d as the AvgPool2d of its kernel, stride and padding, AvgPool2d as it is,
    Flatten per unit, every other module (activations, BatchNorm2d, Dropout) the identity."""
    if isinstance(module, nn.MaxPool2d):
        return F.avg_pool2d(z, module.kernel_size, module.stride, module.padding, module.ceil_mode)
    if isinstance(module, nn.AvgPool2d):
        return module(z)
    if isinstance(module, nn.Flatten):
        return z.flatten(2)
    return z


def _outgoing_gradient(reader: nn.Module, z: Tensor, g: Tensor) -> Tensor:
    """M (rows, B) such that M w is the gradient of the loss with respect to ``reader``'s
    weights reading a new unit with incoming weights w (B,): ``z`` (N, B, ...) are the
    pseudo-units as ``reader`` reads them, ``g`` (N, out, ...) the gradient at its output.
    Rows: (output, position) for a Linear, (output, kernel row, kernel column) for a Conv2d."""
    n_basis = z.shape[1]
    if isinstance(reader, nn.Linear):
        return torch.einsum("no,nbp->opb", g, z.reshape(len(z), n_basis, -1)).reshape(-1, n_basis)
    size = (reader.out_channels, n_basis, *reader.kernel_size)
    dw = torch.nn.grad.conv2d_weight(z, size, g, reader.stride, reader.padding, reader.dilation)
    return dw.permute(0, 2, 3, 1).reshape(-1, n_basis)


def _directions(m: Tensor, mean: Tensor, block: Tensor) -> Tensor:
    """(r, B) GradMax's incoming weights for r = min(k, number of singular values of ``m``)
    new units: the top right singular vectors of ``m`` (rows, B), each signed so that
    ``mean`` (B,) · v ≥ 0, scaled to the Frobenius norm of the first r of the k units'
    own initial weights ``block`` (k, B, ...)."""
    _, _, vh = torch.linalg.svd(m, full_matrices=False)
    v = vh[: len(block)]
    sign = torch.where(v @ mean < 0, -1.0, 1.0).to(v)
    return v * sign[:, None] * (block[: len(v)].norm() / math.sqrt(len(v)))


def _shares(value: Tensor, dim: int, axis: _Axis, split: torch.Generator | None) -> Tensor:
    """Net2net's ``value`` (each student feature of ``dim``, which reads ``axis``, holding its
    teacher feature's weight w) with w divided among the k copies of each teacher feature:
    w / k each without a ``split`` generator, else w · (1 + ε) / k with ε drawn N(0, `SPLIT`²)
    for every entry reading a feature with k > 1 copies and centred over its k copies."""
    shape = [1] * value.dim()
    shape[dim] = -1
    source = axis.source.to(value.device)
    index = source.clamp(min=0)
    counts = axis.counts().to(value.device)
    value = value / counts[index].clamp(min=1).to(value.dtype).view(shape)
    if split is None:
        return value
    shared = ((source >= 0) & (counts[index] > 1)).view(shape)
    eps = SPLIT * torch.randn(value.shape, generator=split).to(value) * shared
    sizes = list(value.shape)
    sizes[dim] = len(counts)
    sums = eps.new_zeros(sizes).index_add(dim, index, eps)  # over each teacher feature's copies
    mean = sums / counts.clamp(min=1).to(value.dtype).view(shape)
    return value * (1 + (eps - mean.index_select(dim, index)) * shared)


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and not math.isnan(x)
