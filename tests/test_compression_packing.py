"""pack_compressed / unpack_compressed: exact inverse, fewer arrays, same values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from penrose_jax.compression import transform
from penrose_jax.compression.packing import PackedLeaf, pack_compressed, unpack_compressed
from penrose_jax.models import llama
from penrose_jax.models.config import tiny_config
from penrose_jax.models.linear import is_compressed
from penrose_jax.training import (init_train_state, make_optimizer, make_train_step,
                                  trainable_mask)
from penrose_jax.training.optimizer import OptimizerConfig


def _compressed_tiny():
  cfg = tiny_config()
  params = llama.init_params(cfg, 0)
  # Per-matrix budget with uneven ranks: several (h, w, rank) groups per leaf.
  cparams, _ = transform.compress(params, {"tiling": "penrose", "param_ratio": 0.5,
                                           "budget_scope": "matrix", "tiles_per_matrix": 8,
                                           "min_rank": 1})
  return cfg, cparams


def _same_tree(a, b):
  la, ta = jax.tree_util.tree_flatten(a)
  lb, tb = jax.tree_util.tree_flatten(b)
  assert ta == tb
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_pack_then_unpack_is_identity_and_input_untouched():
  _, cparams = _compressed_tiny()
  before = jax.tree_util.tree_map(np.asarray, cparams)
  packed, mask = pack_compressed(cparams)
  assert mask is None
  kernel = packed["layers_0"]["attn"]["q_proj"]["kernel"]
  assert isinstance(kernel, PackedLeaf) and kernel.flat.ndim == 1
  _same_tree(unpack_compressed(packed), cparams)
  _same_tree(cparams, before)
  # 7 compressed kernels per layer become 7 vectors; their many factor arrays are gone.
  n_packed = len(jax.tree_util.tree_leaves(packed))
  n_orig = len(jax.tree_util.tree_leaves(cparams))
  assert n_packed == n_orig - sum(
      len(jax.tree_util.tree_leaves(leaf)) - 1
      for leaf in jax.tree_util.tree_leaves(cparams, is_leaf=is_compressed) if is_compressed(leaf))
  assert n_packed < n_orig


def test_packed_leaf_computes_what_the_leaf_computes():
  _, cparams = _compressed_tiny()
  leaf = cparams["layers_1"]["mlp"]["up_proj"]["kernel"]
  packed, _ = pack_compressed({"k": leaf})
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, leaf.shape[0])), jnp.float32)
  np.testing.assert_allclose(packed["k"].matmul(x), leaf.matmul(x), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(packed["k"].materialize(), leaf.materialize(), rtol=1e-6)
  assert packed["k"].param_count() == leaf.param_count()
  assert packed["k"].shape == leaf.shape


def test_gradient_of_packed_vector_is_the_concatenated_leaf_gradients():
  cfg, cparams = _compressed_tiny()
  tokens = jnp.asarray(np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 8)), jnp.int32)
  loss = lambda p: jnp.mean(llama.forward(p, tokens, cfg).logits ** 2)
  g_orig = jax.grad(loss)(cparams)
  packed, _ = pack_compressed(cparams)
  g_packed = jax.grad(loss)(packed)
  expected = jnp.concatenate([jnp.ravel(a) for a in jax.tree_util.tree_leaves(
      g_orig["layers_0"]["mlp"]["down_proj"]["kernel"])])
  got = g_packed["layers_0"]["mlp"]["down_proj"]["kernel"].flat
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)
  assert float(jnp.abs(got).sum()) > 0


def test_mixed_mask_leaf_stays_unpacked_and_mask_follows_packing():
  _, cparams = _compressed_tiny()
  mask = trainable_mask(cparams, "compressed")
  # Freeze one factor array of one leaf: that leaf must stay as it is.
  q = mask["layers_0"]["attn"]["q_proj"]["kernel"]
  first = q.lowrank[0].replace(u=False)
  mask["layers_0"]["attn"]["q_proj"]["kernel"] = q.replace(lowrank=(first,) + q.lowrank[1:])
  packed, packed_mask = pack_compressed(cparams, mask)
  assert not isinstance(packed["layers_0"]["attn"]["q_proj"]["kernel"], PackedLeaf)
  assert isinstance(packed["layers_0"]["attn"]["k_proj"]["kernel"], PackedLeaf)
  assert packed_mask["layers_0"]["attn"]["k_proj"]["kernel"].flat is True
  assert packed_mask["embed"]["embedding"] is False
  assert (jax.tree_util.tree_structure(packed_mask) == jax.tree_util.tree_structure(packed))


def test_packed_tree_trains_under_a_mesh_without_recompiling():
  from penrose_jax import parallel
  cfg, cparams = _compressed_tiny()
  mesh = parallel.make_mesh()
  cparams = parallel.shard_params(cparams, mesh)
  mask = trainable_mask(cparams, "compressed")
  packed, packed_mask = pack_compressed(cparams, mask)
  opt = make_optimizer(OptimizerConfig(learning_rate=1e-2, warmup_steps=0, total_steps=3))
  tokens = jnp.asarray(np.random.default_rng(2).integers(0, cfg.vocab_size, (2, 8)), jnp.int32)

  def loss_fn(p, batch, rng, constants):
    logits = llama.forward(p, batch["tokens"], cfg).logits
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        logits[:, :-1], batch["tokens"][:, 1:])), {}

  step = make_train_step(loss_fn, opt, packed_mask, max_traces=1)
  state = init_train_state(packed, opt, packed_mask)
  losses = []
  for _ in range(3):  # the step/rng/count scalars must already sit on the mesh: one trace
    state, metrics, finite = step(state, {"tokens": tokens})
    assert bool(finite) and float(metrics["grad_norm"]) > 0
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0]
  trained = unpack_compressed(state.params)
  assert type(trained["layers_0"]["attn"]["q_proj"]["kernel"]).__name__ == "TiledLowRank"
  jax.clear_caches()
