"""Llama-family decoder as a Flax Linen module whose params are the plain pytree compression edits.

The module is written so that any `kernel` leaf may be a compressed pytree (see `linear.py`):
projections read an existing kernel with `get_variable` instead of `param`, because Linen's
`param` checks the stored shape against the initializer and a compressed leaf has no such shape.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from penrose_jax.models.config import ModelConfig
from penrose_jax.models.linear import is_compressed, linear

Params = dict[str, Any]


class KVCache(NamedTuple):
  """Per-layer key/value buffers for incremental decoding.

  Attributes:
    keys: tuple over layers of (B, S, num_kv_heads, head_dim) arrays.
    values: same shapes as keys.
  """

  keys: tuple[jax.Array, ...]
  values: tuple[jax.Array, ...]


class ForwardOutput(NamedTuple):
  """What `forward` returns.

  Attributes:
    logits: (B, T, V) float32.
    hidden_states: (L, B, T, D) output of every decoder block, or None.
    final_hidden: (B, T, D) hidden state after the final RMSNorm, or None.
    cache: the updated KVCache, or None when no cache was given.
  """

  logits: jax.Array
  hidden_states: Optional[jax.Array]
  final_hidden: Optional[jax.Array]
  cache: Optional[KVCache]


def _kernel(module: nn.Module, name: str, shape: tuple[int, ...], init) -> Any:
  """Returns an existing (maybe compressed) weight leaf, or creates a dense one at init."""
  if module.has_variable("params", name):
    return module.get_variable("params", name)
  return module.param(name, init, shape)


class Projection(nn.Module):
  """y = linear(kernel, x) (+ bias); the kernel may be dense (in, out) or compressed."""

  features: int
  use_bias: bool = False
  compressed_matmul: str = "factored"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = _kernel(self, "kernel", (x.shape[-1], self.features),
                     nn.initializers.normal(stddev=0.02))
    y = linear(kernel, x, self.compressed_matmul)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(y.dtype)
    return y


class RMSNorm(nn.Module):
  """RMSNorm computed in float32, as the reference implementations do."""

  eps: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * scale).astype(x.dtype)


def rope_angles(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
  """Returns cos/sin of RoPE angles, each (B, T, head_dim // 2).

  Args:
    positions: (B, T) integer positions.
    head_dim: per-head width (even).
    theta: RoPE base.

  Returns:
    (cos, sin) in float32.
  """
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, positions: jax.Array, theta: float, interleaved: bool) -> jax.Array:
  """Rotates query/key features by position.

  Args:
    x: (B, T, heads, head_dim).
    positions: (B, T) integer positions.
    theta: RoPE base.
    interleaved: False pairs feature i with i + d/2 (HF rotate-half); True pairs 2i with 2i+1
      (Meta / GGUF order). Both give identical attention when the q/k weights are permuted
      to match, which a test checks.

  Returns:
    Array shaped like x.
  """
  cos, sin = rope_angles(positions, x.shape[-1], theta)
  cos, sin = cos[:, :, None, :], sin[:, :, None, :]
  x32 = x.astype(jnp.float32)
  if interleaved:
    even, odd = x32[..., 0::2], x32[..., 1::2]
    rotated = jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1)
    return rotated.reshape(x.shape).astype(x.dtype)
  half = x.shape[-1] // 2
  first, second = x32[..., :half], x32[..., half:]
  out = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
  return out.astype(x.dtype)


class Attention(nn.Module):
  """Grouped-query causal self-attention with an optional KV cache."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x, positions, cache_kv=None, cache_index=None, key_mask=None):
    cfg = self.config
    batch, length, _ = x.shape
    groups = cfg.num_heads // cfg.num_kv_heads
    mode = cfg.compressed_matmul
    q = Projection(cfg.num_heads * cfg.head_dim, cfg.attention_bias, mode, name="q_proj")(x)
    k = Projection(cfg.num_kv_heads * cfg.head_dim, cfg.attention_bias, mode, name="k_proj")(x)
    v = Projection(cfg.num_kv_heads * cfg.head_dim, cfg.attention_bias, mode, name="v_proj")(x)
    q = q.reshape(batch, length, cfg.num_heads, cfg.head_dim)
    k = k.reshape(batch, length, cfg.num_kv_heads, cfg.head_dim)
    v = v.reshape(batch, length, cfg.num_kv_heads, cfg.head_dim)
    q = apply_rope(q, positions, cfg.rope_theta, cfg.rope_interleaved)
    k = apply_rope(k, positions, cfg.rope_theta, cfg.rope_interleaved)

    new_cache = None
    if cache_kv is not None:
      k_buf, v_buf = cache_kv
      k_buf = jax.lax.dynamic_update_slice(k_buf, k.astype(k_buf.dtype), (0, cache_index, 0, 0))
      v_buf = jax.lax.dynamic_update_slice(v_buf, v.astype(v_buf.dtype), (0, cache_index, 0, 0))
      new_cache = (k_buf, v_buf)
      k, v = k_buf, v_buf
      key_positions = jnp.arange(k_buf.shape[1])[None, :]
    else:
      key_positions = positions
    # Slots past the current position hold stale or padding entries; the causal mask hides
    # them until a later step overwrites them.
    mask = key_positions[:, None, :] <= positions[:, :, None]  # (B, T, S)
    if key_mask is not None:
      # Left-padded batches: positions restart per row, so causality is by cache slot (the
      # query's slot is cache_index + t) and padded slots are hidden by the key mask.
      if cache_kv is not None:
        query_slots = cache_index + jnp.arange(length)
        mask = key_positions[:, None, :] <= query_slots[None, :, None]
      mask = mask & key_mask[:, None, :].astype(bool)

    q = q.reshape(batch, length, cfg.num_kv_heads, groups, cfg.head_dim)
    scores = jnp.einsum("btkgd,bskd->bkgts", q.astype(jnp.float32), k.astype(jnp.float32))
    scores = scores / jnp.sqrt(jnp.float32(cfg.head_dim))
    scores = jnp.where(mask[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bkgts,bskd->btkgd", weights, v.astype(jnp.float32)).astype(x.dtype)
    out = out.reshape(batch, length, cfg.num_heads * cfg.head_dim)
    return Projection(cfg.hidden_size, False, mode, name="o_proj")(out), new_cache


class MLP(nn.Module):
  """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    mode = cfg.compressed_matmul
    gate = Projection(cfg.intermediate_size, False, mode, name="gate_proj")(x)
    up = Projection(cfg.intermediate_size, False, mode, name="up_proj")(x)
    return Projection(cfg.hidden_size, False, mode, name="down_proj")(jax.nn.silu(gate) * up)


class DecoderBlock(nn.Module):
  """Pre-norm residual block: attention then SwiGLU MLP."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x, positions, cache_kv=None, cache_index=None, key_mask=None):
    cfg = self.config
    attn_out, new_cache = Attention(cfg, name="attn")(
        RMSNorm(cfg.rms_norm_eps, name="attn_norm")(x), positions, cache_kv, cache_index,
        key_mask)
    x = x + attn_out
    x = x + MLP(cfg, name="mlp")(RMSNorm(cfg.rms_norm_eps, name="mlp_norm")(x))
    return x, new_cache


class LlamaModel(nn.Module):
  """The whole decoder. Param names follow docs in ARCHITECTURE.md (embed, layers_i, ...)."""

  config: ModelConfig

  @nn.compact
  def __call__(self, tokens, positions=None, cache: Optional[KVCache] = None, cache_index=None,
               return_hidden: bool = False, key_mask=None,
               last_logits_only: bool = False) -> ForwardOutput:
    cfg = self.config
    if positions is None:
      start = 0 if cache_index is None else cache_index
      positions = start + jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    embed = nn.Embed(cfg.vocab_size, cfg.hidden_size, name="embed",
                     embedding_init=nn.initializers.normal(stddev=0.02))
    x = embed(tokens)
    hidden, new_keys, new_values = [], [], []
    for i in range(cfg.num_layers):
      layer_cache = None if cache is None else (cache.keys[i], cache.values[i])
      x, layer_new = DecoderBlock(cfg, name=f"layers_{i}")(x, positions, layer_cache, cache_index,
                                                          key_mask)
      if layer_new is not None:
        new_keys.append(layer_new[0])
        new_values.append(layer_new[1])
      if return_hidden:
        hidden.append(x)
    final = RMSNorm(cfg.rms_norm_eps, name="final_norm")(x)
    head_input = final[:, -1:] if last_logits_only else final
    if cfg.tie_embeddings:
      logits = embed.attend(head_input)
    else:
      logits = Projection(cfg.vocab_size, name="lm_head")(head_input)
    return ForwardOutput(
        logits=logits.astype(jnp.float32),
        hidden_states=jnp.stack(hidden) if return_hidden else None,
        final_hidden=final if return_hidden else None,
        cache=KVCache(tuple(new_keys), tuple(new_values)) if cache is not None else None)


def init_params(config: ModelConfig, seed: int = 0) -> Params:
  """Random params for a config (tests and tiny models).

  Args:
    config: the architecture.
    seed: PRNG seed.

  Returns:
    The params pytree (plain nested dict of float32 arrays).
  """
  tokens = jnp.zeros((1, 4), jnp.int32)
  variables = LlamaModel(config).init(jax.random.PRNGKey(seed), tokens)
  return jax.tree_util.tree_map(lambda a: a, dict(variables["params"]))


def forward(params: Params, tokens: jax.Array, config: ModelConfig, *,
            positions: Optional[jax.Array] = None, cache: Optional[KVCache] = None,
            cache_index: Optional[jax.Array] = None, return_hidden: bool = False,
            key_mask: Optional[jax.Array] = None,
            last_logits_only: bool = False) -> ForwardOutput:
  """Runs the decoder as a pure function of its params.

  Args:
    params: the params pytree; kernels may be compressed leaves.
    tokens: (B, T) int32 token ids.
    config: the architecture (static under jit).
    positions: optional (B, T) positions; default 0..T-1 (or cache_index + 0..T-1).
    cache: optional KVCache to read and update.
    cache_index: write offset into the cache (scalar int).
    return_hidden: also return per-layer and final hidden states.
    key_mask: optional (B, S) bool, False for key slots never attended (left padding); S is
      the cache length with a cache, else T. With a cache and a key mask, causality is by
      cache slot, so `positions` may restart per row. None keeps the plain causal mask.
    last_logits_only: logits of the last position only, (B, 1, V) (a prefill that needs just
      the next token skips the LM head over the prompt).

  Returns:
    ForwardOutput.
  """
  if LAYER_RUNS in params:
    return _forward_layer_runs(params, tokens, config, positions, cache, cache_index,
                               return_hidden, key_mask, last_logits_only)
  return LlamaModel(config).apply({"params": params}, tokens, positions, cache, cache_index,
                                  return_hidden, key_mask, last_logits_only)


# Key of the stacked-layers form (`stack_layers`): a tuple of runs, each one subtree of
# consecutive decoder layers with identical structure, every array with a leading layer axis.
LAYER_RUNS = "layer_runs"


def _layer_signature(layer: Params) -> tuple:
  leaves, treedef = jax.tree_util.tree_flatten(layer)
  return treedef, tuple((tuple(jnp.shape(a)), jnp.result_type(a)) for a in leaves)


def stack_layers(params: Params) -> Params:
  """Pure transform: consecutive decoder layers of one structure stacked for a scanned forward.

  XLA compiles a decoder written as a Python loop once per layer. When layers share their
  structure (dense models; compressed ones whose ranks are aligned across layers, see
  `compression.inference.prepare_for_inference(share_layers=True)`), `forward` runs each run
  of identical layers as one `jax.lax.scan`, so its block compiles once. Stacking happens on
  the host (numpy), so it compiles nothing; the result is an inference form (the trainer and
  checkpoints use the per-layer tree).

  Args:
    params: params with 'layers_0' ... 'layers_{L-1}' subtrees (concrete arrays).

  Returns:
    A new tree without the 'layers_i' keys and with params['layer_runs']: a tuple of stacked
    runs in layer order (a layer whose structure differs from its neighbours is a run of 1).
  """
  count = sum(1 for k in params if k.startswith("layers_"))
  layers = [params[f"layers_{i}"] for i in range(count)]
  runs: list[tuple[tuple, list]] = []
  for layer in layers:
    signature = _layer_signature(layer)
    if runs and runs[-1][0] == signature:
      runs[-1][1].append(layer)
    else:
      runs.append((signature, [layer]))
  stack = lambda *xs: jax.device_put(np.stack([np.asarray(x) for x in xs]))
  out = {k: v for k, v in params.items() if not k.startswith("layers_")}
  out[LAYER_RUNS] = tuple(jax.tree_util.tree_map(stack, *group) for _, group in runs)
  return out


def unstack_layers(params: Params) -> Params:
  """The inverse of `stack_layers`: per-layer 'layers_i' subtrees again (host arrays).

  Args:
    params: a tree with params['layer_runs'].

  Returns:
    A new tree with 'layers_0' ... and no 'layer_runs' (e.g. to count an unrolled program's
    FLOPs: XLA's cost analysis counts a scanned body once).
  """
  out = {k: v for k, v in params.items() if k != LAYER_RUNS}
  layer = 0
  for run in params[LAYER_RUNS]:
    for i in range(_run_length(run)):
      out[f"layers_{layer}"] = jax.tree_util.tree_map(lambda a, i=i: np.asarray(a)[i], run)
      layer += 1
  return out


def _run_length(run: Params) -> int:
  return int(jnp.shape(jax.tree_util.tree_leaves(run)[0])[0])


def _forward_layer_runs(params, tokens, config, positions, cache, cache_index,
                        return_hidden, key_mask=None, last_logits_only=False) -> ForwardOutput:
  """`forward` on the `stack_layers` form: one lax.scan per run of identical layers."""
  if positions is None:
    start = 0 if cache_index is None else cache_index
    positions = start + jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  block = DecoderBlock(config)
  x = embed_tokens(params, tokens)
  hidden, keys, values, first = [], [], [], 0
  for run in params[LAYER_RUNS]:
    n = _run_length(run)
    if n == 1:  # a layer of its own: applied as is (a scan of one adds a loop)
      layer = jax.tree_util.tree_map(lambda a: a[0], run)
      layer_cache = None if cache is None else (cache.keys[first], cache.values[first])
      x, new = block.apply({"params": layer}, x, positions, layer_cache, cache_index, key_mask)
      outs = x[None] if return_hidden else None
      if new is not None:
        keys.append(new[0])
        values.append(new[1])
    elif cache is None:
      def body(h, layer):
        out, _ = block.apply({"params": layer}, h, positions, None, None, key_mask)
        return out, (out if return_hidden else None)
      x, outs = jax.lax.scan(body, x, run)
    else:
      def body(h, inputs):
        layer, k_buf, v_buf = inputs
        out, (k_new, v_new) = block.apply({"params": layer}, h, positions, (k_buf, v_buf),
                                          cache_index, key_mask)
        return out, (out if return_hidden else None, k_new, v_new)
      run_cache = (jnp.stack(cache.keys[first:first + n]), jnp.stack(cache.values[first:first + n]))
      x, (outs, k_run, v_run) = jax.lax.scan(body, x, (run,) + run_cache)
      keys += [k_run[i] for i in range(n)]
      values += [v_run[i] for i in range(n)]
    if return_hidden:
      hidden.append(outs)
    first += n
  final = _final_norm(params, x, config)
  return ForwardOutput(
      logits=_logits(params, final[:, -1:] if last_logits_only else final, config),
      hidden_states=jnp.concatenate(hidden) if return_hidden else None,
      final_hidden=final if return_hidden else None,
      cache=KVCache(tuple(keys), tuple(values)) if cache is not None else None)


def init_cache(config: ModelConfig, batch: int, max_len: int,
               dtype: jnp.dtype = jnp.float32) -> KVCache:
  """Zero KV buffers for `batch` sequences of up to `max_len` tokens.

  Args:
    config: the architecture.
    batch: batch size.
    max_len: cache length S.
    dtype: buffer dtype.

  Returns:
    KVCache.
  """
  shape = (batch, max_len, config.num_kv_heads, config.head_dim)
  zeros = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
  return KVCache(zeros, tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers)))


def embed_tokens(params: Params, tokens: jax.Array) -> jax.Array:
  """Token embeddings (the input of layer 0), for layer-by-layer streaming.

  Args:
    params: a tree holding at least params['embed']['embedding'].
    tokens: (B, T) ids.

  Returns:
    (B, T, D) embeddings.
  """
  return jnp.take(jnp.asarray(params["embed"]["embedding"]), tokens, axis=0)


def apply_block(layer_params: Params, x: jax.Array, config: ModelConfig,
                positions: Optional[jax.Array] = None) -> jax.Array:
  """Runs one decoder block on its own (the streaming compressor feeds layers one at a time).

  Args:
    layer_params: one 'layers_i' subtree.
    x: (B, T, D) block input.
    config: the architecture.
    positions: (B, T) positions, default 0..T-1.

  Returns:
    (B, T, D) block output.
  """
  if positions is None:
    positions = jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2])
  out, _ = DecoderBlock(config).apply({"params": layer_params}, x, positions)
  return out


def apply_head(params: Params, x: jax.Array, config: ModelConfig) -> jax.Array:
  """Final norm and LM head on the last block's output (the streaming sensitivity pass).

  Args:
    params: the model params (only 'final_norm' and 'embed' or 'lm_head' are read).
    x: (B, T, D) output of the last block.
    config: the architecture.

  Returns:
    (B, T, V) float32 logits, as `forward` computes them.
  """
  return _logits(params, _final_norm(params, x, config), config)


def _final_norm(params: Params, x: jax.Array, config: ModelConfig) -> jax.Array:
  return RMSNorm(config.rms_norm_eps).apply({"params": params["final_norm"]}, x)


def _logits(params: Params, final: jax.Array, config: ModelConfig) -> jax.Array:
  if config.tie_embeddings:
    logits = final @ jnp.asarray(params["embed"]["embedding"]).T.astype(final.dtype)
  else:
    logits = linear(params["lm_head"]["kernel"], final)
  return logits.astype(jnp.float32)


def block_linear_inputs(layer_params: Params, x: jax.Array, config: ModelConfig,
                        positions: Optional[jax.Array] = None) -> dict[str, jax.Array]:
  """Inputs seen by each projection of one block (for activation-aware whitening).

  Args:
    layer_params: one 'layers_i' subtree.
    x: (B, T, D) block input.
    config: the architecture.
    positions: (B, T) positions, default 0..T-1.

  Returns:
    Dict from the projection's path inside the block (e.g. 'attn/q_proj') to its (B, T, in)
    input; q/k/v share one input, as do gate/up.
  """
  if positions is None:
    positions = jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2])

  found: dict[str, jax.Array] = {}

  def capture(next_fun, args, kwargs, context):
    if isinstance(context.module, Projection) and context.method_name == "__call__":
      found["/".join(context.module.path[-2:])] = args[0]
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(capture):
    DecoderBlock(config).apply({"params": layer_params}, x, positions)
  return found


def count_params(params: Params) -> int:
  """Number of stored numbers in a params tree (compressed leaves count what they store).

  Args:
    params: params pytree.

  Returns:
    Total count.
  """
  total = 0
  for leaf in jax.tree_util.tree_leaves(params, is_leaf=is_compressed):
    total += leaf.param_count() if is_compressed(leaf) else int(leaf.size)
  return total
