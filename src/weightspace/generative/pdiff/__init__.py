"""P-diff (Wang et al. 2024, "Neural Network Diffusion"), CPU-sized.

Data (:mod:`.setting`): a BatchNorm CNN, then one checkpoint per step of a fine-tune of its last two
BatchNorm layers. Generator (:mod:`.generator`, networks in :mod:`.network`): those parameters are
normalised per coordinate, a 1-D convolutional autoencoder is trained on them with small noise added
to its input (0.001) and to its latent (0.1), and a DDPM learns the latents; sampling decodes DDPM
latents and writes them into a copy of a training model.
"""

from .generator import PDiff
from .network import ConvAutoencoder, LatentDenoiser
from .setting import SETTING, TRAINABLE, PDiffSetting, base_weights

__all__ = ["SETTING", "TRAINABLE", "ConvAutoencoder", "LatentDenoiser", "PDiff", "PDiffSetting", "base_weights"]
