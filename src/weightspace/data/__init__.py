"""Offline data sets with fixed, seeded splits.

Every loader records how it split and normalised the data in ``Dataset.info`` so that a model zoo
can be traced back to the exact examples it was trained on. Nothing here touches the network.
One module per data set; :mod:`.registry` looks them up by the names configs use.
"""

from ..errors import IdxFormatError
from ..safe_input import read_idx
from .dataset import SPLITS, Dataset
from .digits import load_digits
from .fashion_mnist import (
    DEFAULT_FASHION_ROOT,
    FASHION_CLASSES,
    FASHION_FILES,
    load_fashion_mnist,
)
from .mnist1d import MNIST1D_SEED, load_mnist1d
from .registry import DATASETS, load_dataset

__all__ = [
    "DATASETS",
    "DEFAULT_FASHION_ROOT",
    "FASHION_CLASSES",
    "FASHION_FILES",
    "MNIST1D_SEED",
    "SPLITS",
    "Dataset",
    "IdxFormatError",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist1d",
    "read_idx",
]
