"""Small model zoo, looked up by name in :data:`models`; one file per model family."""

from crossdistill.models.base import count_parameters, models
from crossdistill.models.cnn import cnn
from crossdistill.models.mlp import mlp

__all__ = ["cnn", "count_parameters", "mlp", "models"]
