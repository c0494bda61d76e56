"""KV-cached autoregressive generation: greedy, temperature and nucleus (top-p) sampling."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from penrose_jax.models import llama
from penrose_jax.models.config import ModelConfig

# Prompts and caches are padded to multiples of this so a chat session compiles a handful of
# shapes instead of one per prompt length.
_LENGTH_BUCKET = 64


def _bucket(n: int) -> int:
  return max(_LENGTH_BUCKET, -(-n // _LENGTH_BUCKET) * _LENGTH_BUCKET)


def sample_token(logits: jax.Array, key: jax.Array, temperature: float, top_p: float) -> jax.Array:
  """Picks the next token from (B, V) logits.

  Args:
    logits: (B, V) float logits.
    key: PRNG key (unused when temperature == 0).
    temperature: 0 means greedy argmax.
    top_p: nucleus mass in (0, 1]; 1 disables the cut.

  Returns:
    (B,) int32 token ids.
  """
  if temperature <= 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / temperature
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
    # Keep the smallest prefix whose mass reaches top_p (the first token is always kept).
    cutoff_index = jnp.sum(cumulative < top_p, axis=-1, keepdims=True)
    cutoff = jnp.take_along_axis(sorted_logits, cutoff_index, axis=-1)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("config",))
def _prefill(params, tokens, cache, config: ModelConfig):
  out = llama.forward(params, tokens, config, cache=cache, cache_index=jnp.int32(0))
  return out.logits, out.cache


@functools.partial(jax.jit, static_argnames=("config", "temperature", "top_p"),
                   donate_argnames=("cache",))
def _decode_step(params, token, cache, index, key, config: ModelConfig, temperature: float,
                 top_p: float):
  out = llama.forward(params, token[:, None], config, cache=cache, cache_index=index)
  next_token = sample_token(out.logits[:, -1], key, temperature, top_p)
  return next_token, out.cache


def generate(params: Any, config: ModelConfig, prompt_ids: Sequence[int], max_new_tokens: int, *,
             temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
             stop_token_ids: Sequence[int] = ()) -> list[int]:
  """Generates a continuation of one prompt with a KV cache.

  Args:
    params: params pytree (dense or compressed leaves).
    config: the architecture.
    prompt_ids: prompt token ids (non-empty).
    max_new_tokens: upper bound on generated tokens.
    temperature: 0 for greedy decoding.
    top_p: nucleus sampling mass.
    seed: PRNG seed for sampling.
    stop_token_ids: generation stops after emitting any of these (it is not returned).

  Returns:
    The generated token ids (without the prompt).
  """
  if not prompt_ids:
    raise ValueError("generate: prompt_ids is empty; give at least one token")
  if not 0.0 < top_p <= 1.0:
    raise ValueError(f"generate: top_p must be in (0, 1], got {top_p}")
  prompt_len = len(prompt_ids)
  if prompt_len + max_new_tokens > config.max_position:
    max_new_tokens = max(0, config.max_position - prompt_len)
  cache_len = _bucket(prompt_len + max_new_tokens)
  padded = np.zeros((1, _bucket(prompt_len)), np.int32)
  padded[0, :prompt_len] = prompt_ids
  cache_len = max(cache_len, padded.shape[1])
  cache = llama.init_cache(config, 1, cache_len)
  # Padding positions write junk into the cache past the prompt; the causal mask hides those
  # slots and each decode step overwrites the next one before it becomes visible.
  logits, cache = _prefill(params, jnp.asarray(padded), cache, config)
  key = jax.random.PRNGKey(seed)
  key, sub = jax.random.split(key)
  token = sample_token(logits[:, prompt_len - 1], sub, temperature, top_p)
  stops = set(int(t) for t in stop_token_ids)
  generated: list[int] = []
  for step in range(max_new_tokens):
    value = int(token[0])
    if value in stops:
      break
    generated.append(value)
    if step == max_new_tokens - 1:
      break
    key, sub = jax.random.split(key)
    token, cache = _decode_step(params, token, cache, jnp.int32(prompt_len + step), sub, config,
                                float(temperature), float(top_p))
  return generated


def chat(params: Any, config: ModelConfig, tokenizer: Any, user_message: str, *,
         max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
         system: str | None = None) -> str:
  """Answers one user message through the checkpoint's own chat template.

  Args:
    params: params pytree.
    config: the architecture.
    tokenizer: a TextTokenizer (apply_chat_template, encode, decode, stop_token_ids).
    user_message: the question.
    max_new_tokens: generation budget.
    temperature: 0 for greedy.
    top_p: nucleus mass.
    seed: sampling seed.
    system: optional system message (the template's default is used when None).

  Returns:
    The decoded answer text.
  """
  messages = [] if system is None else [{"role": "system", "content": system}]
  messages.append({"role": "user", "content": user_message})
  prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
  ids = tokenizer.encode(prompt)
  out = generate(params, config, ids, max_new_tokens, temperature=temperature, top_p=top_p,
                 seed=seed, stop_token_ids=tokenizer.stop_token_ids)
  return tokenizer.decode(out)
