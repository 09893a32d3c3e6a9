"""Data: IDX files, dataset sources and cache, and named datasets split into Big / Small / Test."""

from .archives import RemoteArchive, locate_unpacked
from .arrays import LABELLED, ArrayData, Columns, random_split, with_unlabelled
from .cifar import read_cifar_batch
from .datasets import DomainSplits, load_idx_pair
from .idx import DataFormatError, read_idx, write_idx
from .imagenette import load_image_folder
from .office import OFFICE31_DOMAINS, read_feature_file
from .privileged import PrivilegedData, PrivilegedSplits
from .sources import ChecksumError, DatasetNotFoundError, RemoteFile, cache_dir, locate
from .synthetic import synthetic_regression
from .views import Views

__all__ = [
    "ArrayData",
    "Columns",
    "ChecksumError",
    "DataFormatError",
    "DatasetNotFoundError",
    "DomainSplits",
    "LABELLED",
    "OFFICE31_DOMAINS",
    "PrivilegedData",
    "PrivilegedSplits",
    "RemoteArchive",
    "RemoteFile",
    "Views",
    "cache_dir",
    "load_image_folder",
    "load_idx_pair",
    "locate",
    "locate_unpacked",
    "random_split",
    "read_cifar_batch",
    "read_feature_file",
    "read_idx",
    "synthetic_regression",
    "with_unlabelled",
    "write_idx",
]
