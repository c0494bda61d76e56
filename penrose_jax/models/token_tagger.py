"""A token-classification head on a decoder's final hidden states (SOFC-Exp BIO tagging).

A causal decoder's hidden state at a token has seen only the tokens before it, which hurts
tagging (a causal ~120M decoder trails a same-size encoder by ~7 NER points; SuperGLEBer, arXiv
2505.13136; LS-unLLaMA, arXiv 2310.01208). The head can therefore put `context_layers` small
unmasked (bidirectional) self-attention blocks between the decoder and its two linear
classifiers (entities, slots), so each token also sees what follows.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from penrose_jax.models import llama
from penrose_jax.models.config import ModelConfig


def final_hidden_states(params: Any, tokens: jax.Array, config: ModelConfig) -> jax.Array:
  """The decoder's normed final hidden states, without the vocabulary logits.

  Args:
    params: the model params: per-layer tree, or the `llama.stack_layers` form (each run of
      identical layers is one lax.scan, so its block compiles once: a 30-layer train step
      compiles in a fraction of the unrolled time); dense or compressed leaves.
    tokens: (B, T) ids; right padding is harmless (causal attention never looks ahead).
    config: the architecture.

  Returns:
    (B, T, D) hidden states after the final RMSNorm.
  """
  x = llama.embed_tokens(params, tokens)
  if llama.LAYER_RUNS in params:
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    block = llama.DecoderBlock(config)

    def body(h, layer):
      return block.apply({"params": layer}, h, positions)[0], None

    for run in params[llama.LAYER_RUNS]:
      if jnp.shape(jax.tree_util.tree_leaves(run)[0])[0] == 1:
        x = body(x, jax.tree_util.tree_map(lambda a: a[0], run))[0]
      else:
        x = jax.lax.scan(body, x, run)[0]
  else:
    for i in range(config.num_layers):
      x = llama.apply_block(params[f"layers_{i}"], x, config)
  return llama.RMSNorm(config.rms_norm_eps).apply({"params": params["final_norm"]}, x)


class BidirectionalBlock(nn.Module):
  """Pre-norm transformer encoder block (unmasked self-attention over non-padding, then MLP)."""

  num_heads: int
  mlp_ratio: int = 2

  @nn.compact
  def __call__(self, x: jax.Array, valid: jax.Array) -> jax.Array:
    width = x.shape[-1]
    mask = nn.make_attention_mask(valid, valid)  # (B, 1, T, T): padding neither sends nor gets
    y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, name="attn")(
        nn.LayerNorm(name="attn_norm")(x), mask=mask)
    x = x + y
    y = nn.Dense(self.mlp_ratio * width, name="mlp_in")(nn.LayerNorm(name="mlp_norm")(x))
    return x + nn.Dense(width, name="mlp_out")(nn.gelu(y))


class TokenTagger(nn.Module):
  """Entity and slot tag logits per token.

  Attributes:
    num_entity_tags: size of the entity BIO vocabulary.
    num_slot_tags: size of the slot BIO vocabulary.
    context_layers: bidirectional blocks before the classifiers (0 = linear heads only).
    num_heads: attention heads of those blocks (must divide the hidden size).
  """

  num_entity_tags: int
  num_slot_tags: int
  context_layers: int = 1
  num_heads: int = 8

  @nn.compact
  def __call__(self, hidden: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Args: hidden (B, T, D); valid (B, T) bool, False at padding.

    Returns:
      (entity logits (B, T, num_entity_tags), slot logits (B, T, num_slot_tags)), float32.
    """
    x = hidden.astype(jnp.float32)
    for i in range(self.context_layers):
      x = BidirectionalBlock(self.num_heads, name=f"context_{i}")(x, valid)
    entities = nn.Dense(self.num_entity_tags, name="entity_head")(x)
    slots = nn.Dense(self.num_slot_tags, name="slot_head")(x)
    return entities, slots


def masked_cross_entropy(logits: jax.Array, targets: jax.Array, ignore: int = -1
                         ) -> tuple[jax.Array, jax.Array]:
  """Mean token cross-entropy over positions whose target is not `ignore`.

  Args:
    logits: (B, T, L).
    targets: (B, T) int, `ignore` where not scored.
    ignore: the ignored target value.

  Returns:
    (mean loss, number of scored positions).
  """
  scored = targets != ignore
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(log_probs, jnp.where(scored, targets, 0)[..., None], axis=-1)
  count = jnp.sum(scored)
  loss = -jnp.sum(jnp.where(scored, picked[..., 0], 0.0)) / jnp.maximum(count, 1)
  return loss, count
