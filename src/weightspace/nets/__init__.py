"""Small architectures with a batched functional forward: many models, one call.

Each architecture gives (a) an ordinary ``nn.Module`` whose state dict defines the layout, and
(b) ``apply(params, x)``, the same function evaluated for N models at once from a batched state
dict (``name -> Tensor[N, *shape]``) with bmm / grouped convolutions instead of a loop over models.
Tests check (b) against (a) model by model. One module per family: ``mlp``, ``occupancy``, ``cnn``;
``activations`` and ``ops`` hold what they share, ``registry`` builds one from its config.
"""

from .activations import (
    ACTIVATION_GRADS,
    ACTIVATIONS,
    ACTIVATIONS_OUT,
    MONOTONE,
    activation,
)
from .base import Architecture
from .cnn import CNN
from .mlp import MLP
from .occupancy import OccupancyMLP
from .ops import inverted_dropout
from .registry import ARCHITECTURES, build_architecture

__all__ = ["ACTIVATIONS", "ACTIVATIONS_OUT", "ACTIVATION_GRADS", "ARCHITECTURES", "CNN", "MLP", "MONOTONE",
           "Architecture", "OccupancyMLP", "activation", "build_architecture", "inverted_dropout"]
