"""weightspace's own generator: a low-rank Gaussian over many independent runs aligned to their barycenter.

The paper traces the published generators' memorisation to three causes: few training checkpoints,
generators too big for their data, and weight-space symmetries left in the data. This method answers
each one directly:

- **many runs**: hundreds of independent runs of the G.pt-style MLP 784→10→10 on Fashion-MNIST (one
  final checkpoint each), made in one batched training call, plus held-out runs trained alike
  (:mod:`.setting`);
- **symmetry removed**: every run's hidden neurons are reordered to match a barycenter, found by
  alternating weight matching (exact for one hidden layer: one Hungarian assignment per run) and
  averaging; samples get a fresh random neuron order on output, so the audit sees ordinary models;
- **a generator matched to its data**: a Gaussian in the aligned space with ``rank`` principal
  directions and an isotropic remainder (probabilistic PCA): ``rank × P`` numbers learned from
  ``N`` runs, no training loop that could run on into memorisation (:mod:`.generator`).

:mod:`.flow` replaces the Gaussian with a rectified flow over the top principal directions
(``aligned-flow``); :mod:`.mixture` with one Gaussian per cluster of runs (``aligned-mixture``).
"""

from .flow import AlignedFlow
from .generator import AlignedGaussian, barycenter_alignment, incoming_norms
from .mixture import AlignedMixture
from .setting import PRESETS, SETTING, AlignedSetting

__all__ = ["PRESETS", "SETTING", "AlignedFlow", "AlignedGaussian", "AlignedMixture", "AlignedSetting",
           "barycenter_alignment", "incoming_norms"]
