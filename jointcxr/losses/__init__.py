"""The seed methods' losses as pure functions over global arrays.

Convention: every loss returns `(loss, aux)`, where aux holds diagnostics
(accuracies, mean positive/negative similarities, per-direction terms).
Embeddings are passed raw; each loss L2-normalises where its method uses
cosine similarity. `jointcxr.losses.sharded` has `jax.shard_map` versions
that gather negatives from every device with O(B^2 / D) memory per device.
"""

from jointcxr.losses.contrastive import damsm_sentence
from jointcxr.losses.contrastive import infonce
from jointcxr.losses.contrastive import l2_normalize
from jointcxr.losses.contrastive import siglip
from jointcxr.losses.damsm import damsm_word
from jointcxr.losses.damsm import damsm_word_scores
from jointcxr.losses.lovt import lovt_local
from jointcxr.losses.lovt import soft_targets
from jointcxr.losses.mlm import mlm
from jointcxr.losses.mlm import mlm_mask
from jointcxr.losses.ranking import triplet
from jointcxr.losses.ranking import word_triplet

__all__ = [
    "damsm_sentence", "damsm_word", "damsm_word_scores", "infonce",
    "l2_normalize", "lovt_local", "mlm", "mlm_mask", "siglip",
    "soft_targets", "triplet", "word_triplet",
]
