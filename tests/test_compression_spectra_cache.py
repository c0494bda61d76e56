"""compression.spectra_cache: round trip, what the key depends on, unreadable files."""

import numpy as np
import pytest

from penrose_jax.compression import rank_blocks, spectra_cache
from penrose_jax.compression.transform import CompressionConfig


def _spectra():
  rng = np.random.default_rng(0)
  return {f"layers_{i}/mlp/up": [rank_blocks.TileSpectrum(
      4, 6, np.sort(rng.random(4))[::-1], 1.5, (f"layers_{i}/mlp/up", t), 0.25 * t)
      for t in range(3)] for i in range(2)}


def test_round_trip_is_exact(tmp_path):
  spectra = _spectra()
  path = tmp_path / "sub" / "s.npz"
  spectra_cache.save(path, spectra)
  loaded = spectra_cache.load(path)
  assert list(loaded) == list(spectra)
  for key in spectra:
    for a, b in zip(spectra[key], loaded[key]):
      assert (a.h, a.w, a.weight, a.key, a.tail_energy) == (b.h, b.w, b.weight, b.key,
                                                             b.tail_energy)
      np.testing.assert_array_equal(a.sigma, b.sigma)
  assert [p.name for p in path.parent.iterdir()] == ["s.npz"]  # no temp file left


def test_key_ignores_budget_and_storage_but_not_factoring():
  calib = {"windows": 8, "sources": ["a"]}
  base = spectra_cache.cache_key("m", calib, CompressionConfig(param_ratio=0.6))
  same = [CompressionConfig(param_ratio=0.3, quantize="int4", spectral="dct", keep_energy=0.9,
                            min_rank=2)]
  other = [CompressionConfig(param_ratio=0.6, tiling="grid"),
           CompressionConfig(param_ratio=0.6, whiten=True),
           CompressionConfig(param_ratio=0.6, tiles_per_matrix=8)]
  assert all(spectra_cache.cache_key("m", calib, c) == base for c in same)
  assert all(spectra_cache.cache_key("m", calib, c) != base for c in other)
  assert spectra_cache.cache_key("m2", calib, CompressionConfig(param_ratio=0.6)) != base
  assert spectra_cache.cache_key("m", {**calib, "windows": 9},
                                 CompressionConfig(param_ratio=0.6)) != base


def test_unreadable_file_names_itself(tmp_path):
  bad = tmp_path / "spectra_x.npz"
  bad.write_bytes(b"not an npz")
  with pytest.raises(ValueError, match="spectra_x.npz: not a readable spectra cache"):
    spectra_cache.load(bad)
