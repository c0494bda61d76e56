"""Rank allocation, per-tile SVD and whitening."""

import numpy as np
import pytest

from penrose_jax.compression import rank_allocation as ra
from penrose_jax.compression import rank_blocks, whitening
from penrose_jax.compression.tiling import penrose_layout, single_layout


def _low_rank_plus_noise(rng, m, n, r=5, noise=0.05):
  return rng.normal(size=(m, r)) @ rng.normal(size=(r, n)) / np.sqrt(r) + noise * rng.normal(size=(m, n))


def _reconstruct(w, tiling, ranks, gram=None):
  svds, _ = rank_blocks.tile_svds(w, tiling, gram)
  out = np.zeros_like(w, dtype=np.float64)
  for (r0, c0, h, ww, _), r, sv in zip(tiling.tiles, ranks, svds):
    if ra.is_dense_rank(h, ww, r):
      out[r0:r0 + h, c0:c0 + ww] = w[r0:r0 + h, c0:c0 + ww]
    else:
      u, v = rank_blocks.truncate_tile(sv, r)
      out[r0:r0 + h, c0:c0 + ww] = u @ v.T
  return out


def test_budget_allocation_hits_target_and_is_monotone():
  rng = np.random.default_rng(0)
  w = _low_rank_plus_noise(rng, 80, 120)
  t = penrose_layout(80, 120, 16)
  spectra = rank_blocks.tile_spectra_for_matrix(w, t)
  max_step = max(h + ww for _, _, h, ww, _ in t.tiles)
  errors = []
  for ratio in (0.05, 0.1, 0.2, 0.4, 0.7, 1.0):
    budget = ratio * w.size
    ranks = ra.allocate_ranks(spectra, budget)
    cost = ra.allocation_cost(spectra, ranks)
    assert cost <= budget and budget - cost < max_step
    err = np.linalg.norm(w - _reconstruct(w, t, ranks))
    assert np.isclose(err ** 2, ra.allocation_error(spectra, ranks), rtol=1e-6, atol=1e-9)
    errors.append(err)
  assert all(b < a for a, b in zip(errors, errors[1:]))
  assert errors[-1] < 1e-9


def test_flat_spectrum_goes_dense():
  # A full-rank flat spectrum is cheapest stored dense: the greedy takes the dense jump.
  spec = rank_blocks.TileSpectrum(8, 8, np.ones(8))
  assert ra.allocate_ranks([spec], 64) == [8]
  assert ra.allocate_ranks([spec], 63) == [3]  # dense does not fit: rank steps of 16 each.


def test_energy_and_fixed_policies():
  rng = np.random.default_rng(1)
  w = _low_rank_plus_noise(rng, 40, 56, noise=1e-3)
  t = penrose_layout(40, 56, 6)
  ranks = ra.energy_ranks(rank_blocks.tile_spectra_for_matrix(w, t), 0.99)
  assert all(r <= 6 for r in ranks)
  fixed = ra.fixed_ranks(t, {sid: 2 for sid in t.shapes})
  assert fixed == [2] * t.num_tiles
  with pytest.raises(ValueError, match="shape id"):
    ra.fixed_ranks(t, {0: 2})


def test_gram_accumulates_over_batches():
  x = np.random.default_rng(2).normal(size=(3, 10, 6))
  g = whitening.gram_from_activations(x[0])
  for b in x[1:]:
    g = whitening.gram_from_activations(b, g)
  np.testing.assert_allclose(g, x.reshape(-1, 6).T @ x.reshape(-1, 6), rtol=1e-12)
  assert g.dtype == np.float64


def _correlated_inputs(rng, n, d):
  mix = rng.normal(size=(d, d)) * np.logspace(0, -2, d)[None, :]
  return rng.normal(size=(n, d)) @ mix.T * np.logspace(1, -1, d)[None, :]


@pytest.mark.parametrize("layout", ["single", "penrose"])
def test_whitening_lowers_output_error(layout):
  rng = np.random.default_rng(3)
  m, n = 48, 64
  w = _low_rank_plus_noise(rng, m, n, r=6, noise=0.3)
  x = _correlated_inputs(rng, 512, m)
  gram = whitening.gram_from_activations(x)
  t = single_layout(m, n) if layout == "single" else penrose_layout(m, n, 6)
  budget = 0.3 * w.size
  plain = ra.allocate_ranks(rank_blocks.tile_spectra_for_matrix(w, t), budget)
  white = ra.allocate_ranks(rank_blocks.tile_spectra_for_matrix(w, t, gram), budget)
  spectra = rank_blocks.tile_spectra_for_matrix(w, t)
  assert ra.allocation_cost(spectra, white) <= budget
  err_plain = np.linalg.norm(x @ (w - _reconstruct(w, t, plain)))
  err_white = np.linalg.norm(x @ (w - _reconstruct(w, t, white, gram)))
  assert err_white < 0.8 * err_plain, (err_white, err_plain)


@pytest.mark.parametrize("case", ["few_rows", "duplicate_cols", "zeros"])
def test_rank_deficient_activations_do_not_crash(case):
  rng = np.random.default_rng(4)
  if case == "few_rows":
    x = rng.normal(size=(5, 32))
  elif case == "duplicate_cols":
    x = rng.normal(size=(64, 16))
    x = np.concatenate([x, x], axis=1)
  else:
    x = np.zeros((8, 32))
  gram = whitening.gram_from_activations(x)
  chol, used = whitening.damped_cholesky(gram, damping=0.0)
  assert np.all(np.isfinite(chol)) and used >= 0.0
  w = rng.normal(size=(32, 24))
  t = penrose_layout(32, 24, 4)
  svds, damps = rank_blocks.tile_svds(w, t, gram, damping=1e-2)
  assert len(damps) == len(t.row_cuts) - 1 and all(d >= 1e-2 for d in damps)
  full = [min(h, ww) for _, _, h, ww, _ in t.tiles]
  np.testing.assert_allclose(_reconstruct(w, t, full, gram), w, atol=1e-8)
  u, v = rank_blocks.truncate_tile(svds[0], 2)
  assert np.all(np.isfinite(u)) and np.all(np.isfinite(v))


def test_min_rank_floor_keeps_every_tile_alive_within_budget():
  rng = np.random.default_rng(3)
  # One strong matrix and one weak one: without a floor the greedy zeroes the weak one.
  strong = rank_blocks.tile_spectra_for_matrix(10 * _low_rank_plus_noise(rng, 48, 64), penrose_layout(48, 64, 4))
  weak = rank_blocks.tile_spectra_for_matrix(0.01 * rng.normal(size=(48, 64)), penrose_layout(48, 64, 4))
  spectra = strong + weak
  budget = 0.15 * 2 * 48 * 64
  plain = ra.allocate_ranks(spectra, budget)
  assert min(plain[len(strong):]) == 0
  floored = ra.allocate_ranks(spectra, budget, min_rank=1)
  assert min(floored) >= 1
  assert ra.allocation_cost(spectra, floored) <= budget
  with pytest.raises(ValueError, match="min_rank"):
    ra.allocate_ranks(spectra, budget, min_rank=-1)


def _decaying(rng, m, n, decay=0.9):
  u, _ = np.linalg.qr(rng.normal(size=(m, m)))
  v, _ = np.linalg.qr(rng.normal(size=(n, n)))
  k = min(m, n)
  return (u[:, :k] * decay ** np.arange(k)) @ v[:, :k].T


def test_randomized_svd_matches_exact_leading_values():
  rng = np.random.default_rng(3)
  a = _decaying(rng, 200, 150)
  u, s, vt = rank_blocks.randomized_svd(a, 40)
  exact = np.linalg.svd(a, compute_uv=False)
  assert u.shape == (200, 40) and s.shape == (40,) and vt.shape == (40, 150)
  np.testing.assert_allclose(s, exact[:40], rtol=1e-4)
  # Its rank-40 approximation is as good as the exact truncation.
  best = np.sqrt(np.sum(exact[40:] ** 2))
  assert np.linalg.norm(a - (u * s) @ vt) <= best * (1 + 1e-4)
  with pytest.raises(ValueError, match="rank 0"):
    rank_blocks.randomized_svd(a, 0)


def test_randomized_tile_svds_keep_break_even_values_and_tail_energy():
  rng = np.random.default_rng(4)
  w = _decaying(rng, 96, 160, decay=0.95)
  t = penrose_layout(96, 160, 8)
  exact, _ = rank_blocks.tile_svds(w, t)
  fast, _ = rank_blocks.tile_svds(w, t, svd_method="randomized")
  for (_, _, h, ww, _), e, f in zip(t.tiles, exact, fast):
    k = rank_blocks.break_even_rank(h, ww)
    assert f.s.shape[0] == min(k, min(h, ww))
    np.testing.assert_allclose(f.s, e.s[:f.s.shape[0]], rtol=1e-3)
    assert np.isclose(f.tail_energy + np.sum(f.s ** 2), np.sum(e.s ** 2), rtol=1e-9)
  # Allocation and its error accounting are unchanged by the shorter (approximate) spectra.
  spec_e = rank_blocks.tile_spectra_for_matrix(w, t)
  spec_f = rank_blocks.tile_spectra_for_matrix(w, t, svd_method="randomized")
  for ratio in (0.2, 0.5, 0.9):
    re_, rf = ra.allocate_ranks(spec_e, ratio * w.size), ra.allocate_ranks(spec_f, ratio * w.size)
    assert sum(abs(a - b) for a, b in zip(re_, rf)) <= 2, (re_, rf)
    assert np.isclose(ra.allocation_error(spec_e, re_), ra.allocation_error(spec_f, rf), rtol=1e-3)
  assert ra.energy_ranks(spec_e, 0.8) == ra.energy_ranks(spec_f, 0.8)
  with pytest.raises(ValueError, match="svd_method"):
    rank_blocks.tile_svds(w, t, svd_method="lanczos")


def test_normalized_scope_compares_matrices_on_relative_error():
  """Two matrices with the same relative spectrum, energies 1e6 apart: the raw-energy global
  greedy starves the quiet one, the normalized greedy splits the budget evenly."""
  from penrose_jax.compression import streaming
  sigma = np.geomspace(1.0, 1e-2, 32)
  spectra = {"loud": [rank_blocks.TileSpectrum(64, 64, 1e3 * sigma, 1.0, ("loud", 0), 0.0)],
             "quiet": [rank_blocks.TileSpectrum(64, 64, sigma, 1.0, ("quiet", 0), 0.0)]}
  raw = streaming.allocate_global_ranks(spectra, 0.25, scope="global")
  normalized = streaming.allocate_global_ranks(spectra, 0.25, scope="normalized")
  assert raw["quiet"][0] <= 2 and raw["loud"][0] >= 14
  assert abs(normalized["loud"][0] - normalized["quiet"][0]) <= 1
  weights = ra.matrix_weights(spectra, "normalized")
  assert weights["quiet"] == pytest.approx(1e6 * weights["loud"])
  with pytest.raises(ValueError, match="budget_scope='matrix'"):
    ra.matrix_weights(spectra, "matrix")
