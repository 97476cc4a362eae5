"""The study's presets: data setting, samples per group and generator settings per method."""

# Hyper-Representations is audited as published: its code drew every latent dimension with one
# shared random state, so each sample is one training latent plus jitter (the generator's default;
# independent draws per dimension mix unaligned models and give chance-level accuracy).
AS_PUBLISHED = {"hyperrep": {"shared_seed": True}}

# The methods as the paper writes them.
PAPER_NAMES = {"pdiff": "P-diff", "hyperrep": "Hyper-Representations", "gpt": "G.pt", "hyperdiffusion": "HyperDiffusion",
               "aligned": "Aligned Gaussian (weightspace)"}

# Methods by measured CPU cost of a default 3-seed run, largest first: submitted in this order, the
# worker pool starts the long ones first and fills in with the short ones (longest-first scheduling).
COST_ORDER = ("hyperrep", "gpt", "hyperdiffusion", "pdiff", "aligned")


def longest_first(names):
    """``names`` in :data:`COST_ORDER` (a name not in it first: assume it is long)."""
    return sorted(names, key=lambda m: COST_ORDER.index(m) if m in COST_ORDER else -1)

# The paper's calls (Zeng et al. 2025, at original scale): what each method's samples are.
PAPER_CALLS = {
    "hyperrep": {"verdict": "replicates", "replicates": True, "beats_noise": False, "interpolates": False},
    "gpt": {"verdict": "replicates", "replicates": True, "beats_noise": False, "interpolates": False},
    "hyperdiffusion": {"verdict": "replicates", "replicates": True, "beats_noise": False, "interpolates": False},
    "pdiff": {"verdict": "interpolates", "replicates": False, "beats_noise": False, "interpolates": True},
}

HELDOUT = "held-out runs"  # trained like the training runs, never shown to a generator: the novelty ceiling
# Where the paper's reference is not the training models themselves (reconstructions, ground-truth
# shapes), the training models are audited as a group too: what an exact copy of one would score.
COPIES = "copies of training models"

# The paper's two noise σ per method (memorization-protocol.md), on raw weights; G.pt's are its 0.05/0.1
# in the generator's normalised space converted to raw. Marked on each scatter beside the σ sweep.
PAPER_SIGMAS = {"hyperrep": (0.02, 0.04), "gpt": (0.012, 0.024), "hyperdiffusion": (0.02, 0.04),
                "pdiff": (0.06, 0.12)}

PRESETS = {
    # CPU-sized: every method's default data setting, 100 samples per group (as the paper's plots),
    # every generator fitted with 3 seeds on data built once.
    "quick": {"data": "default", "samples": 100, "seeds": 3, "generators": AS_PUBLISHED, "paper_sigmas": PAPER_SIGMAS},
    # The paper's sample counts (200 / 200 / 128 / 1.1 × test shapes), same data settings.
    "paper": {"data": "default", "samples": None, "seeds": 3, "generators": AS_PUBLISHED,
              "paper_sigmas": PAPER_SIGMAS},
    # Seconds: for tests and smoke runs; too small to conclude anything.
    "tiny": {"data": "tiny", "samples": 12, "seeds": 1, "paper_sigmas": PAPER_SIGMAS, "generators": {
        "pdiff": {"ae_steps": 200, "ddpm_steps": 200},
        "hyperrep": {"steps": 150, "shared_seed": True},
        "gpt": {"train_steps": 150},
        "hyperdiffusion": {"train_steps": 150},
        "aligned": {},
    }},
}
