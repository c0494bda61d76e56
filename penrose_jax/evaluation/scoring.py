"""Jitted token log-likelihoods, the primitive under perplexity and multiple-choice scoring."""

from __future__ import annotations

import functools
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from penrose_jax.models import llama
from penrose_jax.models.config import ModelConfig
from penrose_jax.models.token_loss import token_nll

# Sequences are right-padded to a multiple of this so a benchmark compiles a few shapes.
LENGTH_BUCKET = 32


@functools.partial(jax.jit, static_argnames=("config",))
def next_token_logprobs(params: Any, tokens: jax.Array, config: ModelConfig
                        ) -> tuple[jax.Array, jax.Array]:
  """Log-probability and greedy-hit of every next token.

  Args:
    params: params pytree.
    tokens: (B, T) ids.
    config: the architecture.

  Returns:
    (logp, is_greedy), each (B, T - 1): log p(tokens[:, t+1] | tokens[:, :t+1]) and whether
    that token is the argmax prediction.
  """
  logits = llama.forward(params, tokens, config).logits[:, :-1]
  targets = tokens[:, 1:]
  return -token_nll(logits, targets), jnp.argmax(logits, axis=-1) == targets


def pad_batch(sequences: Sequence[Sequence[int]], batch_size: int, pad_id: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
  """Right-pads sequences into a (batch_size, bucketed length) array.

  Args:
    sequences: at most batch_size token lists.
    batch_size: rows of the output (missing rows are padding).
    pad_id: filler token.

  Returns:
    (tokens, lengths).
  """
  longest = max(len(s) for s in sequences)
  width = -(-longest // LENGTH_BUCKET) * LENGTH_BUCKET
  tokens = np.full((batch_size, width), pad_id, np.int32)
  lengths = np.zeros((batch_size,), np.int32)
  for row, seq in enumerate(sequences):
    tokens[row, :len(seq)] = seq
    lengths[row] = len(seq)
  return tokens, lengths


def batched(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
  """Yields consecutive chunks of `items` of at most `size` elements.

  Args:
    items: a sequence.
    size: chunk size (> 0).

  Returns:
    An iterator over chunks.
  """
  for start in range(0, len(items), size):
    yield items[start:start + size]
