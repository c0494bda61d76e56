"""Compressed leaves: matmul == x @ materialize under jit, grads, FLOPs, checkpoint contract."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from penrose_jax.compression import leaves, rank_allocation as ra
from penrose_jax.compression.tiling import penrose_layout
from penrose_jax.compression.transform import build_leaf
from penrose_jax.models.linear import linear

M, N = 40, 56
RNG = np.random.default_rng(0)
W = (RNG.normal(size=(M, 6)) @ RNG.normal(size=(6, N)) / 3 + 0.05 * RNG.normal(size=(M, N))
     ).astype(np.float32)
TILING = penrose_layout(M, N, 8)
X = jnp.asarray(RNG.normal(size=(2, 3, M)), jnp.float32)


def _mixed_ranks():
  # A zero tile, a dense tile and varied low ranks in one leaf.
  ranks = [(i % 4) + 1 for i in range(TILING.num_tiles)]
  ranks[0] = 0
  ranks[1] = min(TILING.tiles[1][2], TILING.tiles[1][3])
  return ranks


LEAF_BUILDERS = {
    "lowrank": lambda: build_leaf(W, TILING, _mixed_ranks()),
    "lowrank_int8": lambda: build_leaf(W, TILING, _mixed_ranks(), quantize="int8", group_size=16),
    "lowrank_int4": lambda: build_leaf(W, TILING, _mixed_ranks(), quantize="int4", group_size=16),
    "factor_dct": lambda: build_leaf(W, TILING, _mixed_ranks(), spectral="dct", keep_energy=0.9),
    "block_fft": lambda: build_leaf(W, TILING, _mixed_ranks(), spectral="fft",
                                    spectral_scope="block", tau=0.02, quantize="int8"),
    "rtn_int4": lambda: leaves.rtn_quantize_dense(W, bits=4, group_size=16),
}
_MATMUL = jax.jit(lambda leaf, x: leaf.matmul(x))
_MATERIALIZE = jax.jit(lambda leaf: leaf.materialize())
_LINEAR = jax.jit(linear)


@pytest.fixture(scope="module", params=sorted(LEAF_BUILDERS))
def leaf(request):
  return LEAF_BUILDERS[request.param]()


def test_matmul_matches_materialize(leaf):
  dense = _MATERIALIZE(leaf)
  assert dense.shape == (M, N) and leaf.shape == (M, N)
  np.testing.assert_allclose(_MATMUL(leaf, X), X @ dense, atol=2e-5, rtol=2e-5)
  np.testing.assert_allclose(_LINEAR(leaf, X), X @ dense, atol=2e-5, rtol=2e-5)
  assert 0 < leaf.nbytes() and 0 < leaf.param_count()


def test_materialize_host_matches_jitted_materialize(leaf):
  host = leaf.materialize_host()
  assert isinstance(host, np.ndarray) and host.dtype == np.float32 and host.shape == (M, N)
  np.testing.assert_allclose(host, _MATERIALIZE(leaf), atol=1e-6, rtol=1e-5)


def test_building_and_host_materializing_compiles_nothing(caplog):
  # Eager jnp ops (jnp.asarray included, in JAX 0.10) compile one program per new shape and
  # keep it cached: compressing a 1.5 B model grew ~100 MiB per layer that way.
  ranks = [(i % 7) + 3 for i in range(TILING.num_tiles)]  # shapes no other test used
  with jax.log_compiles(True), caplog.at_level("WARNING"):
    leaf = build_leaf(W, TILING, ranks)
    leaf.materialize_host()
    build_leaf(W, TILING, ranks, quantize="int8", group_size=8).materialize_host()
    build_leaf(W, TILING, ranks, spectral="dct", keep_energy=0.9, quantize="int8",
               group_size=8).materialize_host()
  assert [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()] == []


def test_checkpoint_contract_roundtrip(leaf):
  arrays = {k: np.asarray(v) for k, v in leaf.checkpoint_arrays().items()}
  meta = json.loads(json.dumps(leaf.checkpoint_meta()))
  assert all(k.replace("_", "").isalnum() for k in arrays)
  again = type(leaf).from_checkpoint(arrays, meta)
  np.testing.assert_array_equal(_MATERIALIZE(again), _MATERIALIZE(leaf))
  assert again.param_count() == leaf.param_count() and again.nbytes() == leaf.nbytes()
  assert type(leaf).__name__ in leaves.LEAF_TYPES


def test_exact_when_nothing_dropped():
  full = [min(h, w) for _, _, h, w, _ in TILING.tiles]
  half = [max(1, min(h, w) // 2) for _, _, h, w, _ in TILING.tiles]
  np.testing.assert_allclose(_MATERIALIZE(build_leaf(W, TILING, full)), W, atol=2e-5)
  block = build_leaf(W, TILING, full, spectral="fft", spectral_scope="block")
  np.testing.assert_allclose(_MATERIALIZE(block), W, atol=2e-5)
  # Factor spectral with tau=0 keeps every coefficient: equals the plain low-rank leaf.
  np.testing.assert_allclose(_MATERIALIZE(build_leaf(W, TILING, half, spectral="dct", tau=0.0)),
                             _MATERIALIZE(build_leaf(W, TILING, half)), atol=2e-5)


@pytest.mark.parametrize("name", ["lowrank", "factor_dct", "block_fft"])
def test_grad_flows(name):
  leaf = LEAF_BUILDERS[name]()
  grads = jax.jit(jax.grad(lambda l: jnp.sum(l.matmul(X) ** 2), allow_int=True))(leaf)
  floats = [g for g in jax.tree_util.tree_leaves(grads) if jnp.issubdtype(g.dtype, jnp.floating)]
  assert floats and all(np.all(np.isfinite(g)) for g in floats)
  assert sum(float(jnp.sum(jnp.abs(g))) for g in floats) > 0
  gx = jax.jit(jax.grad(lambda x, l: jnp.sum(l.matmul(x))))(X, leaf)
  np.testing.assert_allclose(gx, jnp.broadcast_to(jnp.sum(_MATERIALIZE(leaf), 1), X.shape),
                             atol=1e-4)


def _flops(leaf, x):
  cost = jax.jit(lambda l, x: l.matmul(x)).lower(leaf, x).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def test_flops_scale_with_rank():
  rng = np.random.default_rng(1)
  w = rng.normal(size=(128, 256)).astype(np.float32)
  t = penrose_layout(128, 256, 8)
  x = jnp.ones((64, 128), jnp.float32)
  f16 = _flops(build_leaf(w, t, [16] * t.num_tiles), x)
  f8 = _flops(build_leaf(w, t, [8] * t.num_tiles), x)
  dense = 2.0 * 64 * 128 * 256
  assert 0.35 < f8 / f16 < 0.7, (f8, f16)
  assert f16 < 0.6 * dense, (f16, dense)


def test_io_checkpoint_roundtrip(tmp_path):
  ckpt = pytest.importorskip("penrose_jax.io.checkpoint")
  leaf = build_leaf(W, TILING, _mixed_ranks(), spectral="dct", keep_energy=0.9, quantize="int4",
                    group_size=16)
  params = {"layers_0": {"attn": {"q_proj": {"kernel": leaf}}}}
  ckpt.save_params(tmp_path / "ckpt", params)
  back, _ = ckpt.restore_params(tmp_path / "ckpt")
  again = back["layers_0"]["attn"]["q_proj"]["kernel"]
  assert type(again) is type(leaf)
  np.testing.assert_array_equal(_MATERIALIZE(again), _MATERIALIZE(leaf))


# ---- band matmul (issue 8): static slices per row band, no gathers/scatters.

from penrose_jax.compression.tiling import Tiling, grid_layout, single_layout  # noqa: E402

BAND_TILINGS = {
    "penrose": TILING,
    "grid": grid_layout(M, N, 6),
    "single": single_layout(M, N),
    # Not band-structured: the left and right halves are cut at different rows.
    "custom": Tiling(M, N, (0, M), ((0, 0, 16, 28, 0), (16, 0, 24, 28, 1), (0, 28, 24, 28, 2),
                                    (24, 28, 16, 28, 3)), "custom"),
}
BAND_STORAGE = {
    "plain": {},
    "int8": {"quantize": "int8", "group_size": 16},
    "dct": {"spectral": "dct", "keep_energy": 0.9},
    "block_fft": {"spectral": "fft", "spectral_scope": "block", "tau": 0.02},
}


def _band_ranks(tiling):
  # Rank-0, dense and low-rank tiles wherever the tiling has enough of them.
  ranks = [(i % 3) + 1 for i in range(tiling.num_tiles)]
  if tiling.num_tiles >= 3:
    ranks[0] = 0
    ranks[1] = min(tiling.tiles[1][2], tiling.tiles[1][3])
  return ranks


def _band_leaf(tiling_name, storage):
  tiling = BAND_TILINGS[tiling_name]
  return build_leaf(W, tiling, _band_ranks(tiling), **BAND_STORAGE[storage])


def _float_leaves(tree):
  return [a for a in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(a.dtype, jnp.floating)]


@pytest.mark.parametrize("path", ["segments", "batched"])
@pytest.mark.parametrize("storage", sorted(BAND_STORAGE))
@pytest.mark.parametrize("tiling_name", sorted(BAND_TILINGS))
def test_band_matmul_matches_materialize(tiling_name, storage, path, monkeypatch):
  # MATMUL_PATH is read at trace time, so each path gets fresh jitted functions.
  monkeypatch.setattr(leaves, "MATMUL_PATH", path)
  _MATMUL = jax.jit(lambda l, x: l.matmul(x))
  leaf = _band_leaf(tiling_name, storage)
  plan = leaves.band_plan(leaf.shape, leaf.groups())
  assert (plan is None) == (tiling_name == "custom")
  kinds = {type(g).__name__ for g in leaf.groups()}
  if tiling_name in ("penrose", "grid") and storage != "block_fft":
    assert kinds == {"LowRankGroup", "DenseGroup"}  # dense tiles and low-rank tiles mixed
  if tiling_name in ("penrose", "grid"):  # rank-0 tile: a gap the band path fills with zeros
    assert sum(g.row0.size for g in leaf.groups()) == BAND_TILINGS[tiling_name].num_tiles - 1
  dense = _MATERIALIZE(leaf)
  np.testing.assert_allclose(_MATMUL(leaf, X), X @ dense, atol=2e-5, rtol=2e-5)
  np.testing.assert_allclose(_MATMUL(leaf, X[0, 0]), X[0, 0] @ dense, atol=2e-5, rtol=2e-5)

  # Gradients w.r.t. every stored float array equal those through the dense matrix.
  c = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, N)), jnp.float32)
  g_band = jax.jit(jax.grad(lambda l: jnp.sum(l.matmul(X) * c), allow_int=True))(leaf)
  g_dense = jax.jit(jax.grad(lambda l: jnp.sum((X @ l.materialize()) * c), allow_int=True))(leaf)
  fb, fd = _float_leaves(g_band), _float_leaves(g_dense)
  assert fb and len(fb) == len(fd)
  for a, b in zip(fb, fd):
    scale = float(jnp.max(jnp.abs(b.astype(jnp.float32)))) + 1e-6
    np.testing.assert_allclose(np.asarray(a, np.float32) / scale, np.asarray(b, np.float32) / scale,
                               atol=2e-3 if a.dtype == jnp.float16 else 1e-5)


@pytest.mark.parametrize("path", ["segments", "batched"])
def test_band_matmul_has_no_gather_or_scatter(path, monkeypatch):
  monkeypatch.setattr(leaves, "MATMUL_PATH", path)
  leaf = _band_leaf("penrose", "plain")
  hlo = jax.jit(lambda l, x: l.matmul(x)).lower(leaf, X).as_text()
  assert "gather" not in hlo and "scatter" not in hlo
  custom = jax.jit(lambda l, x: l.matmul(x)).lower(_band_leaf("custom", "plain"), X).as_text()
  assert "gather" in custom or "scatter" in custom  # the fallback really is the old path
