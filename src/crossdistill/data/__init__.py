"""Data: IDX files, dataset sources and cache, and named datasets split into Big / Small / Test."""

from .arrays import ArrayData, random_split
from .datasets import DomainSplits, datasets, load_idx_pair
from .idx import DataFormatError, read_idx, write_idx
from .sources import ChecksumError, RemoteFile, cache_dir, locate
from .synthetic import synthetic_regression

__all__ = [
    "ArrayData",
    "ChecksumError",
    "DataFormatError",
    "DomainSplits",
    "RemoteFile",
    "cache_dir",
    "datasets",
    "load_idx_pair",
    "locate",
    "random_split",
    "read_idx",
    "synthetic_regression",
    "write_idx",
]
