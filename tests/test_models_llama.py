"""Behaviour of the Llama forward: parity with numpy, RoPE conventions, KV cache, leaf dispatch."""

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from penrose_jax.models import generation, llama
from penrose_jax.models.config import ModelConfig, tiny_config
from tests.numpy_reference import reference_logits


def _randomise(params, seed=1, scale=0.3):
  """Init gives norms of ones; perturb everything so the test exercises every parameter."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  new = [l + scale * jax.random.normal(k, l.shape) * (1.0 if l.ndim > 1 else 0.5)
         for l, k in zip(leaves, keys)]
  return jax.tree_util.tree_unflatten(treedef, new)


@pytest.mark.parametrize("overrides", [
    {},
    {"tie_embeddings": True},
    {"attention_bias": True, "num_kv_heads": 1},
    {"num_kv_heads": 4, "num_layers": 3},
])
def test_forward_matches_numpy_reference(overrides):
  cfg = tiny_config(**overrides)
  params = _randomise(llama.init_params(cfg, seed=0))
  tokens = np.array([[3, 17, 5, 90, 1, 44, 2, 8, 61, 33]])
  out = llama.forward(params, jnp.asarray(tokens), cfg, return_hidden=True)
  ref, ref_hidden = reference_logits(params, cfg, tokens[0])
  np.testing.assert_allclose(np.asarray(out.logits[0]), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
  np.testing.assert_allclose(np.asarray(out.hidden_states[-1, 0]), ref_hidden[-1], rtol=1e-4,
                             atol=1e-4 * np.abs(ref_hidden[-1]).max())
  assert out.hidden_states.shape == (cfg.num_layers, 1, tokens.shape[1], cfg.hidden_size)


def _permute_to_interleaved(kernel, n_heads):
  """(in, out) kernel in rotate-half order -> the interleaved order GGUF files use."""
  w = kernel.T  # (out, in)
  out_dim = w.shape[0]
  w = w.reshape(n_heads, 2, out_dim // n_heads // 2, -1).swapaxes(1, 2).reshape(out_dim, -1)
  return w.T


def test_interleaved_rope_with_permuted_weights_equals_rotate_half():
  cfg = tiny_config()
  params = _randomise(llama.init_params(cfg))
  permuted = jax.tree_util.tree_map(lambda a: a, params)
  for i in range(cfg.num_layers):
    attn = permuted[f"layers_{i}"]["attn"]
    attn["q_proj"]["kernel"] = _permute_to_interleaved(np.asarray(attn["q_proj"]["kernel"]),
                                                       cfg.num_heads)
    attn["k_proj"]["kernel"] = _permute_to_interleaved(np.asarray(attn["k_proj"]["kernel"]),
                                                       cfg.num_kv_heads)
  tokens = jnp.array([[1, 2, 3, 4, 5, 6, 7]])
  a = llama.forward(params, tokens, cfg).logits
  b = llama.forward(permuted, tokens, ModelConfig(**{**cfg.to_dict(), "rope_interleaved": True}))
  np.testing.assert_allclose(np.asarray(a), np.asarray(b.logits), rtol=1e-5, atol=1e-5)
  # And the conventions really differ: the wrong one changes the logits.
  c = llama.forward(permuted, tokens, cfg).logits
  assert float(jnp.max(jnp.abs(a - c))) > 1e-3


def test_kv_cache_decoding_matches_full_forward():
  cfg = tiny_config()
  params = _randomise(llama.init_params(cfg))
  prompt = [5, 9, 12, 3]
  out = generation.generate(params, cfg, prompt, 6)
  seq = list(prompt)
  for _ in range(6):
    logits = llama.forward(params, jnp.asarray([seq]), cfg).logits
    seq.append(int(jnp.argmax(logits[0, -1])))
  assert out == seq[len(prompt):]


def test_decode_step_compiles_once():
  cfg = tiny_config()
  params = llama.init_params(cfg)
  counted = chex.assert_max_traces(n=1)(generation._decode_step.__wrapped__)
  step = jax.jit(counted, static_argnames=("config", "temperature", "top_p"))
  cache = llama.init_cache(cfg, 1, 64)
  token = jnp.array([1], jnp.int32)
  for i in range(4):
    token, cache = step(params, token, cache, jnp.int32(i), jax.random.PRNGKey(i), config=cfg,
                        temperature=0.0, top_p=1.0)


def test_sampling_respects_top_p_and_temperature():
  logits = jnp.log(jnp.array([[0.7, 0.2, 0.05, 0.05]]))
  keys = jax.random.split(jax.random.PRNGKey(0), 200)
  picks = {int(generation.sample_token(logits, k, 1.0, 0.75)[0]) for k in keys}
  assert picks == {0, 1}
  assert int(generation.sample_token(logits, keys[0], 0.0, 1.0)[0]) == 0
  many = {int(generation.sample_token(logits, k, 5.0, 1.0)[0]) for k in keys}
  assert many == {0, 1, 2, 3}


@flax.struct.dataclass
class _FactoredLeaf:
  """A minimal compressed leaf: W = A @ B, applied without forming W."""
  a: jax.Array
  b: jax.Array

  @property
  def shape(self):
    return (self.a.shape[0], self.b.shape[1])

  def matmul(self, x):
    return (x @ self.a) @ self.b

  def materialize(self):
    return self.a @ self.b

  def param_count(self):
    return self.a.size + self.b.size

  def nbytes(self):
    return self.a.nbytes + self.b.nbytes


def test_compressed_leaf_flows_through_forward_jit_and_grad():
  cfg = tiny_config()
  params = llama.init_params(cfg)
  kernel = np.asarray(params["layers_0"]["mlp"]["up_proj"]["kernel"])
  u, s, vt = np.linalg.svd(kernel, full_matrices=False)
  leaf = _FactoredLeaf(jnp.asarray(u * s), jnp.asarray(vt))
  compressed = jax.tree_util.tree_map(lambda a: a, params)
  compressed["layers_0"]["mlp"]["up_proj"]["kernel"] = leaf
  tokens = jnp.array([[1, 2, 3, 4]])
  fwd = jax.jit(llama.forward, static_argnames=("config",))
  np.testing.assert_allclose(np.asarray(fwd(compressed, tokens, config=cfg).logits),
                             np.asarray(fwd(params, tokens, config=cfg).logits), atol=1e-5)
  grads = jax.grad(lambda p: jnp.sum(fwd(p, tokens, config=cfg).logits ** 2))(compressed)
  assert isinstance(grads["layers_0"]["mlp"]["up_proj"]["kernel"], _FactoredLeaf)
  assert float(jnp.abs(grads["layers_0"]["mlp"]["up_proj"]["kernel"].a).sum()) > 0
  # Input tree untouched (transforms never mutate).
  assert isinstance(params["layers_0"]["mlp"]["up_proj"]["kernel"], jax.Array)
  assert llama.count_params(compressed) == llama.count_params(params) - kernel.size + leaf.param_count()


def test_apply_block_and_linear_inputs_match_full_model():
  cfg = tiny_config()
  params = _randomise(llama.init_params(cfg))
  tokens = jnp.array([[4, 8, 15, 16, 23, 42]])
  full = llama.forward(params, tokens, cfg, return_hidden=True)
  x = llama.embed_tokens(params, tokens)
  for i in range(cfg.num_layers):
    inputs = llama.block_linear_inputs(params[f"layers_{i}"], x, cfg)
    assert set(inputs) == {"attn/q_proj", "attn/k_proj", "attn/v_proj", "attn/o_proj",
                           "mlp/gate_proj", "mlp/up_proj", "mlp/down_proj"}
    assert inputs["mlp/down_proj"].shape == (1, 6, cfg.intermediate_size)
    x = llama.apply_block(params[f"layers_{i}"], x, cfg)
    np.testing.assert_allclose(np.asarray(x), np.asarray(full.hidden_states[i]), atol=1e-5)


def test_pinned_parameter_count_of_tiny_config():
  cfg = tiny_config()
  # embed 96*32 + lm_head 32*96 + final norm 32 + per layer (q 32*32, k 32*16, v 32*16,
  # o 32*32, gate/up 32*64 each, down 64*32, two norms 2*32) * 2 layers.
  assert llama.count_params(llama.init_params(cfg)) == 96 * 32 * 2 + 32 + 2 * (
      1024 + 512 + 512 + 1024 + 3 * 2048 + 64)


def test_config_validation_errors_are_clear():
  with pytest.raises(ValueError, match="num_heads=6 must be a multiple of num_kv_heads=4"):
    tiny_config(num_heads=6, num_kv_heads=4)
  with pytest.raises(ValueError, match="unknown ModelConfig fields"):
    ModelConfig.from_dict({**tiny_config().to_dict(), "hiden_size": 3})


def test_materialize_mode_and_dense_equivalent_match_factored_matmul():
  import dataclasses
  from penrose_jax.compression import transform
  from penrose_jax.models.linear import dense_equivalent
  cfg = tiny_config()
  params = _randomise(llama.init_params(cfg))
  # One compressed matrix keeps the factored gradient's compile short.
  compressed, _ = transform.compress(params, {"param_ratio": 0.5, "tiles_per_matrix": 4,
                                              "include": r"layers_0/mlp/up_proj/kernel$"})
  tokens = jnp.array([[3, 1, 4, 1, 5, 9, 2, 6]])
  factored = llama.forward(compressed, tokens, cfg).logits
  mat_cfg = dataclasses.replace(cfg, compressed_matmul="materialize")
  materialized = llama.forward(compressed, tokens, mat_cfg).logits
  dense = llama.forward(dense_equivalent(compressed), tokens, cfg).logits
  np.testing.assert_allclose(np.asarray(materialized), np.asarray(factored), atol=2e-5)
  np.testing.assert_allclose(np.asarray(dense), np.asarray(factored), atol=2e-5)
  loss = lambda p, c: jnp.sum(llama.forward(p, tokens, c).logits ** 2)
  g_fact = jax.grad(loss)(compressed, cfg)
  g_mat = jax.grad(loss)(compressed, mat_cfg)
  for a, b in zip(jax.tree_util.tree_leaves(g_fact), jax.tree_util.tree_leaves(g_mat)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-3)
  with pytest.raises(ValueError, match="compressed_matmul='fast'"):
    tiny_config(compressed_matmul="fast")
