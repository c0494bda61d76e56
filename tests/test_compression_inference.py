"""Inference form (issue 20): grouped / segment matmul parity, one compile per shape, and the
params -> params transform that decodes spectral and quantized leaves once."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from penrose_jax.compression import factored, inference, leaves, transform
from penrose_jax.compression.tiling import grid_layout, penrose_layout, single_layout
from penrose_jax.compression.transform import build_leaf
from penrose_jax.models import llama
from penrose_jax.models.config import tiny_config

M, N = 48, 80
RNG = np.random.default_rng(3)
W = (RNG.normal(size=(M, 5)) @ RNG.normal(size=(5, N)) / 3 + 0.05 * RNG.normal(size=(M, N))
     ).astype(np.float32)
X = jnp.asarray(RNG.normal(size=(2, 3, M)), jnp.float32)
TILINGS = {"single": single_layout(M, N), "grid": grid_layout(M, N, 6),
           "penrose": penrose_layout(M, N, 8)}
STORAGE = {"plain": {}, "int8": {"quantize": "int8", "group_size": 16},
           "int4": {"quantize": "int4", "group_size": 16},
           "factor_dct": {"spectral": "dct", "keep_energy": 0.9},
           "factor_fft_int8": {"spectral": "fft", "tau": 0.01, "quantize": "int8"},
           "block_dct": {"spectral": "dct", "spectral_scope": "block", "keep_energy": 0.95}}
_MATERIALIZE = jax.jit(lambda leaf: leaf.materialize())


def _ranks(tiling):
  ranks = [(i % 4) + 1 for i in range(tiling.num_tiles)]
  if tiling.num_tiles >= 3:  # a rank-0 gap and a dense tile
    ranks[0] = 0
    ranks[1] = min(tiling.tiles[1][2], tiling.tiles[1][3])
  return ranks


def _leaf(tiling, storage):
  return build_leaf(W, TILINGS[tiling], _ranks(TILINGS[tiling]), **STORAGE[storage])


@pytest.mark.parametrize("storage", sorted(STORAGE))
@pytest.mark.parametrize("tiling", sorted(TILINGS))
def test_prepared_leaf_matches_stored_materialize(tiling, storage):
  leaf = _leaf(tiling, storage)
  prepared = inference.prepare_leaf(leaf)
  assert isinstance(prepared, inference.FactoredMatrix)
  assert prepared.shape == leaf.shape
  assert (prepared.param_count(), prepared.nbytes()) == (leaf.param_count(), leaf.nbytes())
  dense = _MATERIALIZE(leaf)
  out = jax.jit(lambda l, x: l.matmul(x))(prepared, X)
  np.testing.assert_allclose(out, X @ dense, atol=2e-5, rtol=2e-5)
  np.testing.assert_allclose(_MATERIALIZE(prepared), dense, atol=2e-5, rtol=2e-5)
  # Decoded once: the compiled matmul holds no coefficient gather.
  hlo = jax.jit(lambda l, x: l.matmul(x)).lower(prepared, X).as_text()
  assert "gather" not in hlo and "scatter" not in hlo


def test_prepared_grads_match_dense():
  prepared = inference.prepare_leaf(_leaf("penrose", "plain"))
  c = jnp.asarray(RNG.normal(size=(2, 3, N)), jnp.float32)
  gx = jax.grad(lambda x: jnp.sum(prepared.matmul(x) * c))(X)
  np.testing.assert_allclose(gx, c @ _MATERIALIZE(prepared).T, atol=1e-5)
  # The factors are differentiable (the stored sizes are an int array, not a parameter).
  g = jax.grad(lambda uv: jnp.sum(prepared.replace(u=uv[0], v=uv[1]).matmul(X) * c))(
      (prepared.u, prepared.v))
  assert all(np.all(np.isfinite(a)) for a in jax.tree_util.tree_leaves(g))


@pytest.mark.parametrize("path", ["segments", "batched"])
def test_one_trace_per_leaf_structure(path, monkeypatch):
  # Same tiling and ranks, different values: the jitted matmul compiles once.
  monkeypatch.setattr(leaves, "MATMUL_PATH", path)
  chex.clear_trace_counter()  # the counter is keyed by the function's code, not the object
  ranks = _ranks(TILINGS["penrose"])
  a = build_leaf(W, TILINGS["penrose"], ranks)
  b = build_leaf(W[::-1].copy(), TILINGS["penrose"], ranks)
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def apply(leaf, x):
    return leaf.matmul(x)

  for leaf in (a, b, a):
    np.testing.assert_allclose(apply(leaf, X), X @ _MATERIALIZE(leaf), atol=2e-5, rtol=2e-5)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def apply_prepared(leaf, x):
    return leaf.matmul(x)

  for leaf in (a, b):
    apply_prepared(inference.prepare_leaf(leaf), X)


def test_segments_use_few_dots_and_exact_flops():
  # Dots: one per band and one per output segment, never one per tile; stage FLOPs are the
  # true ranks' (no padding in the segment path).
  w = RNG.normal(size=(96, 160)).astype(np.float32)
  tiling = grid_layout(96, 160, 16)
  leaf = build_leaf(w, tiling, [3] * tiling.num_tiles)
  plan = factored.segment_plan_for(leaf.shape, leaves.band_plan(leaf.shape, leaf.groups()))
  bands = len({t[0] for t in tiling.tiles})
  assert len(plan.bands) == bands and len(plan.segments) == tiling.num_tiles // bands
  hlo = jax.jit(lambda l, x: l.matmul(x)).lower(leaf, X[..., :1].repeat(96, -1)).as_text()
  assert hlo.count(" dot(") <= len(plan.bands) + len(plan.segments)


def test_rank_buckets_bound_padding():
  assert factored.rank_buckets([8, 8, 8]) == (8,)
  buckets = factored.rank_buckets([2, 3, 30, 31, 32], max_buckets=3, max_waste=0.1)
  assert buckets == (3, 32)
  assert factored.rank_buckets(list(range(1, 40)), max_buckets=2)[-1] == 39


def test_prepare_for_inference_model_logits_match():
  cfg = tiny_config()
  params = llama.init_params(cfg, seed=1)
  compressed, _ = transform.compress(params, {"param_ratio": 0.5, "tiles_per_matrix": 4,
                                              "tiling": "penrose", "budget_scope": "matrix",
                                              "spectral": "dct", "keep_energy": 0.95})
  prepared = inference.prepare_for_inference(compressed)
  tokens = jnp.asarray(RNG.integers(0, cfg.vocab_size, (2, 9)), jnp.int32)
  fwd = jax.jit(lambda p, t: llama.forward(p, t, cfg).logits)
  np.testing.assert_allclose(fwd(prepared, tokens), fwd(compressed, tokens), atol=2e-4, rtol=2e-4)
  assert llama.count_params(prepared) == llama.count_params(compressed)
  kinds = {type(leaf).__name__ for leaf in jax.tree_util.tree_leaves(
      prepared, is_leaf=lambda x: isinstance(x, inference.FactoredMatrix))
      if isinstance(leaf, inference.FactoredMatrix)}
  assert kinds == {"FactoredMatrix"}


def _shared_model(tiling="penrose", num_layers=3):
  cfg = tiny_config(num_layers=num_layers)
  params = llama.init_params(cfg, seed=2)
  compressed, _ = transform.compress(params, {"param_ratio": 0.5, "tiles_per_matrix": 4,
                                              "tiling": tiling, "budget_scope": "matrix"})
  return cfg, compressed


def test_share_layers_matches_and_scans_one_block():
  # Ranks padded per tile position across layers: one stacked run, the same logits and KV
  # cache, the stored parameter count unchanged, and one block's dots in the program.
  cfg, compressed = _shared_model()
  shared = inference.prepare_for_inference(compressed, share_layers=True)
  plain = inference.prepare_for_inference(compressed)
  assert len(shared[llama.LAYER_RUNS]) == 1 and "layers_0" not in shared
  assert llama.count_params(shared) == llama.count_params(compressed)
  assert inference.rank_padding(compressed) >= 0.0
  tokens = jnp.asarray(RNG.integers(0, cfg.vocab_size, (2, 7)), jnp.int32)
  fwd = jax.jit(lambda p, t: llama.forward(p, t, cfg, return_hidden=True))
  ref, out = fwd(plain, tokens), fwd(shared, tokens)
  np.testing.assert_allclose(out.logits, ref.logits, atol=2e-4, rtol=2e-4)
  np.testing.assert_allclose(out.hidden_states, ref.hidden_states, atol=2e-4, rtol=2e-4)
  cache = llama.init_cache(cfg, 2, 9)
  step = jax.jit(lambda p, t, c: llama.forward(p, t, cfg, cache=c, cache_index=jnp.int32(0)))
  ref_c, out_c = step(plain, tokens, cache), step(shared, tokens, cache)
  np.testing.assert_allclose(out_c.logits, ref_c.logits, atol=2e-4, rtol=2e-4)
  for a, b in zip(out_c.cache.keys + out_c.cache.values, ref_c.cache.keys + ref_c.cache.values):
    np.testing.assert_allclose(a, b, atol=2e-4, rtol=2e-4)
  dots = lambda p: jax.jit(lambda q, t: llama.forward(q, t, cfg).logits).lower(
      p, tokens).as_text().count("dot_general")
  assert dots(shared) * 2 < dots(plain)


def test_share_layers_without_alignment_keeps_distinct_layers():
  # A layer whose matrix is dense elsewhere cannot share: it becomes its own run.
  cfg, compressed = _shared_model("single")
  compressed["layers_1"]["mlp"]["up_proj"]["kernel"] = _MATERIALIZE(
      compressed["layers_1"]["mlp"]["up_proj"]["kernel"])
  shared = inference.prepare_for_inference(compressed, share_layers=True)
  assert [llama._run_length(run) for run in shared[llama.LAYER_RUNS]] == [1, 1, 1]
  tokens = jnp.asarray(RNG.integers(0, cfg.vocab_size, (1, 5)), jnp.int32)
  fwd = jax.jit(lambda p, t: llama.forward(p, t, cfg).logits)
  np.testing.assert_allclose(fwd(shared, tokens), fwd(compressed, tokens), atol=2e-4, rtol=2e-4)


def test_dense_stack_layers_matches_forward():
  cfg = tiny_config(num_layers=3)
  params = llama.init_params(cfg, seed=4)
  tokens = jnp.asarray(RNG.integers(0, cfg.vocab_size, (2, 6)), jnp.int32)
  fwd = jax.jit(lambda p, t: llama.forward(p, t, cfg).logits)
  np.testing.assert_allclose(fwd(llama.stack_layers(params), tokens), fwd(params, tokens),
                             atol=1e-5, rtol=1e-5)
