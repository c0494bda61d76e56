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


# Batched prompts are left-padded to one of these lengths (powers of two and 1.5x them: at most a
# third of a batch is padding, and a run over prompts of any lengths compiles a handful of shapes).
_MIN_PROMPT_BUCKET = 16


def bucket_prompt_length(n: int) -> int:
  """The padded prompt length of a batch whose longest prompt has n tokens.

  Args:
    n: longest prompt length (>= 1).

  Returns:
    The smallest of 16, 24, 32, 48, 64, 96, ... that is >= n.
  """
  size = _MIN_PROMPT_BUCKET
  while True:
    if size >= n:
      return size
    if size * 3 // 2 >= n:
      return size * 3 // 2
    size *= 2


def batch_sizes(n: int, batch_size: int) -> list[int]:
  """How n prompts are cut into batches: full batches of batch_size, then the remainder as
  powers of two, largest first (10 with batch_size 16 -> [8, 2]).

  Filler rows would cost a whole prefill each (prefill dominates ~300-token prompts); powers
  of two keep a run to at most log2(batch_size) + 1 row counts, so few compiled shapes.

  Args:
    n: number of prompts.
    batch_size: most prompts per batch (>= 1).

  Returns:
    Batch sizes summing to n.
  """
  sizes = [batch_size] * (n // batch_size)
  rest = n % batch_size
  while rest:
    size = 1 << (rest.bit_length() - 1)
    sizes.append(size)
    rest -= size
  return sizes


def _record(step, token, budgets, stop_ids, pad_id, generated, counts, done):
  """Writes step's token of each row (pad once a row stopped or ran out of budget)."""
  done = done | jnp.isin(token, stop_ids) | (step >= budgets)
  generated = jax.lax.dynamic_update_slice(
      generated, jnp.where(done, pad_id, token)[:, None], (0, step))
  return generated, counts + (~done).astype(jnp.int32), done


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "temperature", "top_p",
                                              "pad_id"))
def _generate_padded(params, tokens, prompt_lengths, budgets, key, stop_ids, config: ModelConfig,
                     max_new_tokens: int, temperature: float, top_p: float, pad_id: int):
  """Prefill and the whole decode loop of one left-padded batch, on device.

  Args:
    params: params pytree.
    tokens: (B, P) left-padded prompt ids.
    prompt_lengths: (B,) true prompt lengths.
    budgets: (B,) new tokens each row may emit (<= max_new_tokens).
    key: PRNG key.
    stop_ids: (K,) int32 ids that end a row (not emitted); -1 entries match nothing.
    config: the architecture.
    max_new_tokens: steps of the output buffer.
    temperature: 0 for greedy.
    top_p: nucleus mass.
    pad_id: what a stopped row emits.

  Returns:
    ((B, max_new_tokens) generated ids, pad after each row's end; (B,) counts of real tokens).
  """
  batch, prompt_slots = tokens.shape
  cache_len = prompt_slots + max_new_tokens
  padding = prompt_slots - prompt_lengths
  # Constant over the run: slots left of a row's prompt are padding; later slots become visible
  # through the causal (by slot) mask as they are written.
  key_mask = jnp.arange(cache_len)[None, :] >= padding[:, None]
  positions = jnp.maximum(jnp.arange(prompt_slots)[None, :] - padding[:, None], 0)
  cache = llama.init_cache(config, batch, cache_len)
  out = llama.forward(params, tokens, config, positions=positions, cache=cache,
                      cache_index=jnp.int32(0), key_mask=key_mask, last_logits_only=True)
  key, sub = jax.random.split(key)
  token = sample_token(out.logits[:, -1], sub, temperature, top_p)
  generated = jnp.full((batch, max_new_tokens), pad_id, jnp.int32)
  counts = jnp.zeros((batch,), jnp.int32)
  generated, counts, done = _record(0, token, budgets, stop_ids, pad_id, generated, counts,
                                    jnp.zeros((batch,), bool))

  def keep_going(state):
    step, done = state[0], state[-1]
    return (step < max_new_tokens) & ~jnp.all(done)

  def decode(state):
    # Step s feeds token s-1 at slot P + s - 1 (row position: its length + s - 1).
    step, token, cache, key, generated, counts, done = state
    key, sub = jax.random.split(key)
    out = llama.forward(params, token[:, None], config,
                        positions=(prompt_lengths + step - 1)[:, None], cache=cache,
                        cache_index=prompt_slots + step - 1, key_mask=key_mask)
    token = sample_token(out.logits[:, -1], sub, temperature, top_p)
    generated, counts, done = _record(step, token, budgets, stop_ids, pad_id, generated, counts,
                                      done)
    return step + 1, token, out.cache, key, generated, counts, done

  state = (jnp.int32(1), token, out.cache, key, generated, counts, done)
  state = jax.lax.while_loop(keep_going, decode, state)
  return state[4], state[5]


def generate_batch(params: Any, config: ModelConfig, prompt_ids_list: Sequence[Sequence[int]],
                   max_new_tokens: int, *, stop_token_ids: Sequence[int] = (),
                   temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                   batch_size: int = 16, pad_id: int = 0) -> list[list[int]]:
  """Generates continuations of many prompts, a KV-cached batch at a time.

  Prompts are sorted by length and cut into batches (`batch_sizes`: batch_size, then powers of
  two); each batch is left-padded to `bucket_prompt_length` and decoded by one jitted
  program (prefill, then a lax.while_loop that stops when every row has hit a stop id or its
  budget), so a run compiles one program per (rows, padded length) and never syncs with the
  host per token. Greedy output equals `generate` prompt by prompt; sampled output uses one
  key per batch (seed folded with the batch index), so it differs from `generate`'s.

  Args:
    params: params pytree (dense or compressed leaves).
    config: the architecture.
    prompt_ids_list: prompts as token id lists (each non-empty).
    max_new_tokens: upper bound on generated tokens per prompt (also cut so that a row's
      positions stay below config.max_position, as `generate` does).
    stop_token_ids: a row stops after emitting any of these (not returned).
    temperature: 0 for greedy decoding.
    top_p: nucleus sampling mass in (0, 1].
    seed: PRNG seed for sampling.
    batch_size: most prompts decoded together.
    pad_id: token fed as left padding (masked, so its value does not matter).

  Returns:
    Generated ids per prompt (without the prompt), in input order.

  Raises:
    ValueError: an empty prompt, top_p outside (0, 1], batch_size < 1 or max_new_tokens < 0.
  """
  if not 0.0 < top_p <= 1.0:
    raise ValueError(f"generate_batch: top_p must be in (0, 1], got {top_p}")
  if batch_size < 1:
    raise ValueError(f"generate_batch: batch_size must be >= 1, got {batch_size}")
  if max_new_tokens < 0:
    raise ValueError(f"generate_batch: max_new_tokens must be >= 0, got {max_new_tokens}")
  prompts = [list(map(int, p)) for p in prompt_ids_list]
  empty = [i for i, p in enumerate(prompts) if not p]
  if empty:
    raise ValueError(f"generate_batch: prompts {empty[:5]} are empty; give at least one token")
  results: list[list[int]] = [[] for _ in prompts]
  if max_new_tokens == 0:
    return results
  # A traced argument (not static): runs with other stop ids reuse the compiled program.
  stops = jnp.asarray(sorted({int(t) for t in stop_token_ids}) or [-1], jnp.int32)
  order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
  start = 0
  for batch_index, rows in enumerate(batch_sizes(len(order), batch_size)):
    chunk = order[start:start + rows]
    start += rows
    slots = bucket_prompt_length(max(len(prompts[i]) for i in chunk))
    tokens = np.full((rows, slots), pad_id, np.int32)
    lengths = np.ones((rows,), np.int32)
    budgets = np.zeros((rows,), np.int32)
    for row, index in enumerate(chunk):
      ids = prompts[index]
      tokens[row, slots - len(ids):] = ids
      lengths[row] = len(ids)
      budgets[row] = max(0, min(max_new_tokens, config.max_position - len(ids)))
    key = jax.random.fold_in(jax.random.PRNGKey(seed), batch_index)
    generated, counts = _generate_padded(
        params, jnp.asarray(tokens), jnp.asarray(lengths), jnp.asarray(budgets), key, stops,
        config=config, max_new_tokens=int(max_new_tokens), temperature=float(temperature),
        top_p=float(top_p), pad_id=int(pad_id))
    generated, counts = np.asarray(generated), np.asarray(counts)
    for row, index in enumerate(chunk):
      results[index] = generated[row, :counts[row]].tolist()
  return results


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



def chat_batch(params: Any, config: ModelConfig, tokenizer: Any, user_messages: Sequence[str], *,
               max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
               seed: int = 0, system: str | None = None, batch_size: int = 16) -> list[str]:
  """`chat` for many user messages at once (`generate_batch`); answers in input order.

  Args:
    params: params pytree.
    config: the architecture.
    tokenizer: a TextTokenizer (apply_chat_template, encode, decode, stop_token_ids).
    user_messages: the questions.
    max_new_tokens: generation budget per answer.
    temperature: 0 for greedy (then each answer equals `chat`'s).
    top_p: nucleus mass.
    seed: sampling seed.
    system: optional system message (the template's default is used when None).
    batch_size: most prompts decoded together.

  Returns:
    The decoded answers.
  """
  prompts = []
  for message in user_messages:
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": message})
    prompts.append(tokenizer.encode(tokenizer.apply_chat_template(messages,
                                                                  add_generation_prompt=True)))
  outs = generate_batch(params, config, prompts, max_new_tokens, temperature=temperature,
                        top_p=top_p, seed=seed, stop_token_ids=tokenizer.stop_token_ids,
                        batch_size=batch_size)
  return [tokenizer.decode(out) for out in outs]
