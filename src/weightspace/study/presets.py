"""The study's presets: data setting, samples per group and generator settings per method."""

# Hyper-Representations is audited as published: its code drew every latent dimension with one
# shared random state, so each sample is one training latent plus jitter (the generator's default;
# independent draws per dimension mix unaligned models and give chance-level accuracy).
AS_PUBLISHED = {"hyperrep": {"shared_seed": True}}

PRESETS = {
    # CPU-sized: every method's default data setting, 100 samples per group (as the paper's plots),
    # every generator fitted with 3 seeds on data built once.
    "quick": {"data": "default", "samples": 100, "seeds": 3, "generators": AS_PUBLISHED},
    # The paper's sample counts (200 / 200 / 128 / 1.1 × test shapes), same data settings.
    "paper": {"data": "default", "samples": None, "seeds": 3, "generators": AS_PUBLISHED},
    # Seconds: for tests and smoke runs; too small to conclude anything.
    "tiny": {"data": "tiny", "samples": 12, "seeds": 1, "generators": {
        "pdiff": {"ae_steps": 200, "ddpm_steps": 200},
        "hyperrep": {"steps": 150, "shared_seed": True},
        "gpt": {"train_steps": 150},
        "hyperdiffusion": {"train_steps": 150},
    }},
}
