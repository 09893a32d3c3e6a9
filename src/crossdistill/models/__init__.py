"""Small model zoo, looked up by name in `crossdistill.registries.models`; one file per model
family."""

from crossdistill.models.base import count_parameters
from crossdistill.models.cnn import cnn
from crossdistill.models.files import (
    ModelFileError,
    check_outputs,
    load_state_dict_file,
    load_torchscript,
)
from crossdistill.models.growth import (
    EXTENSIONS,
    Slot,
    Slots,
    active_new_units,
    at_slot,
    grow,
    placed,
    unit_slots,
)
from crossdistill.models.lstm import RowLSTM, lstm
from crossdistill.models.mlp import mlp
from crossdistill.models.vgg import VGGFeatures, load_vgg_features, vgg16_features, vgg19_features

__all__ = [
    "EXTENSIONS",
    "ModelFileError",
    "RowLSTM",
    "Slot",
    "Slots",
    "VGGFeatures",
    "active_new_units",
    "at_slot",
    "check_outputs",
    "cnn",
    "count_parameters",
    "grow",
    "load_state_dict_file",
    "load_torchscript",
    "load_vgg_features",
    "lstm",
    "mlp",
    "placed",
    "unit_slots",
    "vgg16_features",
    "vgg19_features",
]
