"""Distribution alignment of a compressed model to its dense original.

Entry point: `from penrose_jax.alignment.align import align` (the function is deliberately not
re-exported here: it would shadow the `align` submodule).
"""

from penrose_jax.alignment.align import (AlignmentConfig, ObjectiveConfig, make_alignment_eval,
                                         make_alignment_loss)
from penrose_jax.alignment.losses import (combined_objective, feature_mse, hidden_kl,
                                          hidden_kl_per_layer, js_divergence, logit_kl,
                                          next_token_cross_entropy)
from penrose_jax.alignment.teacher_cache import (TeacherCache, cache_teacher_outputs,
                                                 load_teacher_cache)

__all__ = [
    "AlignmentConfig", "ObjectiveConfig", "TeacherCache", "cache_teacher_outputs",
    "combined_objective", "feature_mse", "hidden_kl", "hidden_kl_per_layer", "js_divergence",
    "load_teacher_cache", "logit_kl", "make_alignment_eval", "make_alignment_loss",
    "next_token_cross_entropy",
]
