"""Hyper-Representations (Schürholt et al. 2022, "Hyper-Representations as Generative Models").

A transformer autoencoder over a zoo of small CNNs. Each output neuron is one token: its incoming
weights (for a conv layer, the flattened kernel slice of that output channel) followed by its bias,
zero-padded to a common width (:class:`Tokenizer`). Tokens are embedded by a linear map per layer
plus a learned position embedding, passed through a transformer encoder, flattened and mapped
linearly to one latent vector per model (the original's "linear" compression); a mirrored decoder
maps it back. Loss = ``(1 - gamma)`` × reconstruction MSE of weights standardised per layer by the
layer's mean and std over the zoo + ``gamma`` × NT-Xent between projections of the latents of two
augmented views of each model. Views: a neuron permutation from a fixed pool of ``permutations``
random ones (the identity first; exact symmetries, the reconstruction target is permuted too),
then Gaussian noise and random erasing of coordinates on the input only.

Sampling: encode the training models, keep the top ``top_fraction`` by accuracy, fit a 1-D Gaussian
KDE (``bandwidth``) per latent dimension, sample and decode. The original code draws every
dimension's KDE sample with the same random state, so a sample takes the same training latent in
every dimension (one training latent plus jitter); the default ``shared_seed=True`` reproduces
that published sampler. ``shared_seed=False`` draws each dimension independently, which mixes
coordinates of different (unaligned) models and gives chance-level accuracy on a zoo of
independently trained models.

Data: :mod:`.setting`; networks: :mod:`.network`; the generator: :mod:`.generator`. The autoencoder
is smaller than the original (d_model 64, one transformer layer each side, latent 256) so that data,
fit and sampling take a few minutes on one CPU core.
"""

from .generator import HyperRep, kde_sample
from .network import HyperAutoEncoder, LayerLinear, Tokenizer, nt_xent
from .setting import ARCHITECTURE, PRESETS, SETTING, HyperRepSetting, zoo_runs

__all__ = ["ARCHITECTURE", "PRESETS", "SETTING", "HyperAutoEncoder", "HyperRep", "HyperRepSetting", "LayerLinear",
           "Tokenizer", "kde_sample", "nt_xent", "zoo_runs"]
