"""Next-token negative log-likelihood: the one masked NLL under training, alignment and scoring.

The Q&A trainer's loss (`qa.trainer.masked_lm_loss`), the alignment objective's cross-entropy
term (`alignment.losses.next_token_cross_entropy`) and the log-likelihoods that perplexity and
multiple choice sum (`evaluation.scoring.next_token_logprobs`) all take the same two steps
here, so a change to how a token is scored reaches every one of them. It sits in models/
because it needs only logits and token ids, below every package that trains or scores.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

Array = jax.Array


def masked_token_mean(values: Array, mask: Optional[Array] = None) -> Array:
  """Mean of per-token values over the tokens the mask selects.

  Args:
    values: per-token values, any shape (e.g. (B, T)).
    mask: optional array broadcastable to `values`; non-zero entries are counted.

  Returns:
    Scalar float32 mean (0 when the mask selects nothing).
  """
  values = values.astype(jnp.float32)
  if mask is None:
    return jnp.mean(values)
  weights = jnp.broadcast_to(mask.astype(jnp.float32), values.shape)
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def token_nll(logits: Array, targets: Array) -> Array:
  """Negative log-probability of each target under its logits (no dtype change: callers that
  train cast the logits to float32 first; scoring keeps the model's dtype).

  Args:
    logits: (..., V) logits, logits[..., t, :] predicting targets[..., t].
    targets: (...) int token ids.

  Returns:
    (...) NLL per target, in the logits' dtype.
  """
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]


def masked_nll(logits: Array, targets: Array, mask: Optional[Array] = None) -> Array:
  """Mean float32 NLL of the targets the mask selects.

  Args:
    logits: (B, T, V) logits aligned with targets (logits[:, t] predicts targets[:, t]).
    targets: (B, T) int token ids.
    mask: optional (B, T) mask over targets (1 = count, 0 = prompt / padding).

  Returns:
    Scalar float32 loss in nats per counted target (0 when the mask selects nothing).
  """
  return masked_token_mean(token_nll(logits.astype(jnp.float32), targets), mask)
