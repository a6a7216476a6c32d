"""Every seed loss as a pure function (METHODS.md §2.2, §3.2).

All losses take raw embeddings, L2-normalise where the method uses cosine
similarity, compute in float32 (bf16 inputs are upcast) and return
`(loss, aux)`: a scalar and a dict of scalar diagnostics whose loss
components are differentiable. Exceptions, by their nature:
`damsm_word_scores` / `damsm_word_pair_scores` return score arrays,
`soft_targets` / `grid_positions` target weights and coordinates,
`random_negatives` indices, `mlm_mask` the corrupted tokens.

`jointcxr.losses.sharded` has `jax.shard_map` versions of the cross-batch
losses whose per-device memory grows as B^2/D.
"""

from jointcxr.losses.contrastive import damsm_sentence
from jointcxr.losses.contrastive import infonce
from jointcxr.losses.contrastive import logits_ce
from jointcxr.losses.contrastive import siglip
from jointcxr.losses.core import l2_normalize
from jointcxr.losses.damsm import damsm_word
from jointcxr.losses.damsm import damsm_word_pair_scores
from jointcxr.losses.damsm import damsm_word_scores
from jointcxr.losses.lovt import grid_positions
from jointcxr.losses.lovt import lovt_local
from jointcxr.losses.lovt import soft_targets
from jointcxr.losses.masked_lm import mlm
from jointcxr.losses.masked_lm import mlm_mask
from jointcxr.losses.ranking import random_negatives
from jointcxr.losses.ranking import triplet
from jointcxr.losses.ranking import word_triplet

__all__ = [
    "damsm_sentence", "damsm_word", "damsm_word_pair_scores",
    "damsm_word_scores", "grid_positions", "infonce", "l2_normalize",
    "logits_ce", "lovt_local", "mlm", "mlm_mask", "random_negatives",
    "siglip", "soft_targets", "triplet", "word_triplet",
]
