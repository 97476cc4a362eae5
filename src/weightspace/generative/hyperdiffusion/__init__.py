"""HyperDiffusion (Erkoç et al. 2023, https://arxiv.org/abs/2303.17015), CPU-sized in 2-D.

The original fits one occupancy MLP per 3-D shape of a category, every fit starting from the MLP
fitted to the first shape (so all weights live near one point and neurons stay aligned), then trains
a transformer diffusion model on the flattened weights, one token per layer, and samples with DDIM.
Shapes are rebuilt from generated weights by marching cubes and compared as point clouds.

Here the shapes are 2-D silhouettes (:mod:`weightspace.shapes`), the MLPs are small
:class:`~weightspace.nets.OccupancyMLP` s, marching squares replaces marching cubes, and the
denoiser is the shared :mod:`~weightspace.generative.diffusion` core with a layer-token transformer.
Data: :mod:`.setting`; networks: :mod:`.network`; the generator: :mod:`.generator`.
"""

from .generator import HyperDiffusion
from .network import LayerTransformer, segments
from .setting import (
           PRESETS,
           SETTING,
           HyperDiffusionSetting,
           fit_occupancy,
           test_shapes,
           training_shapes,
)

__all__ = ["PRESETS", "SETTING", "HyperDiffusion", "HyperDiffusionSetting", "LayerTransformer", "fit_occupancy",
           "segments", "test_shapes", "training_shapes"]
