"""Memorization audit: how close generated models are to their training checkpoints, and how good."""

from ..align import (
    align_to,
    aligned_l2,
    aligned_l2_fast,
    aligned_l2_pairs,
    fast_path_agreement,
    match_permutations,
)
from .novelty import (
    ModelSet,
    NoiseFrontier,
    beyond_frontier,
    frontier_from_table,
    noise_frontier,
    novelty_table,
)
from .similarity import (
    chamfer_distance,
    error_iou,
    l2_distances,
    max_similarity_to_training,
    min_distance_to_training,
    nearest,
    prediction_agreement,
)
from .verdict import pooled_verdict, rule_text, verdict

__all__ = [
    "ModelSet",
    "NoiseFrontier",
    "align_to",
    "aligned_l2",
    "aligned_l2_fast",
    "aligned_l2_pairs",
    "beyond_frontier",
    "chamfer_distance",
    "error_iou",
    "fast_path_agreement",
    "frontier_from_table",
    "l2_distances",
    "match_permutations",
    "max_similarity_to_training",
    "min_distance_to_training",
    "nearest",
    "noise_frontier",
    "novelty_table",
    "pooled_verdict",
    "prediction_agreement",
    "rule_text",
    "verdict",
]
