"""G.pt (Peebles et al. 2022, "Learning to Learn with Generative Models of Neural Network Checkpoints").

A diffusion transformer over parameter vectors, trained on pairs of checkpoints from the same SGD
run: given the starting parameters θ, their loss and a target loss, it denoises the later
parameters θ' and predicts them directly (x0-prediction). Tokens are per-layer chunks of the
flattened vectors (one linear embedder per chunk, a mirrored linear decoder per chunk) for θ and
for the noised θ', plus three scalar tokens (starting loss, target loss, diffusion timestep)
embedded with sinusoids of geometric frequencies, as in the original. Augmentation applies one
neuron permutation to both members of a pair, so the pair still describes one run of one function.

Sampling is "one-step prompting": θ = fresh random inits of the architecture (seeds no training
run used), prompted with their loss and target loss 0; one reverse diffusion gives θ'.
Data: :mod:`.setting`; networks: :mod:`.network`; the generator: :mod:`.generator`.
"""

from .generator import Gpt, checkpoint_pairs, permute_pairs
from .network import FrequencyEmbedder, GptDenoiser, chunk_splits
from .setting import ARCHITECTURE, PRESETS, SETTING, GptSetting

__all__ = ["ARCHITECTURE", "PRESETS", "SETTING", "FrequencyEmbedder", "Gpt", "GptDenoiser", "GptSetting",
           "checkpoint_pairs", "chunk_splits", "permute_pairs"]
