"""The study's presets: which data preset each method builds, samples per group, generator fits."""

# Methods by measured CPU cost of a default 3-seed run, largest first: submitted in this order, the
# worker pool starts the long ones first and fills in with the short ones (longest-first scheduling).
COST_ORDER = ("pdiff", "hyperrep", "gpt", "hyperdiffusion", "aligned")


def longest_first(names):
    """``names`` in :data:`COST_ORDER` (a name not in it first: assume it is long)."""
    return sorted(names, key=lambda m: COST_ORDER.index(m) if m in COST_ORDER else -1)


PRESETS = {
    # CPU-sized: every method's default data setting, 100 samples per group (as the paper's plots),
    # every generator fitted with 3 seeds on data built once.
    "quick": {"data": "default", "samples": 100, "seeds": 3},
    # The paper's sample counts (200 / 200 / 128 / 1.1 × test shapes), same data settings.
    "paper": {"data": "default", "samples": None, "seeds": 3},
    # Seconds: for tests and smoke runs; too small to conclude anything.
    "tiny": {"data": "tiny", "samples": 12, "seeds": 1},
}
