"""compress(): pure pytree transform, budgets, validation, stats, whitening, RTN baseline."""

import copy

import jax
import ml_collections
import numpy as np
import pytest

from penrose_jax.compression import leaves, transform
from penrose_jax.compression.whitening import gram_from_activations

RNG = np.random.default_rng(0)


def _lr(m, n, r=5, noise=0.05):
  return (RNG.normal(size=(m, r)) @ RNG.normal(size=(r, n)) / np.sqrt(r)
          + noise * RNG.normal(size=(m, n))).astype(np.float32)


PARAMS = {"embed": {"embedding": RNG.normal(size=(20, 32)).astype(np.float32)},
          "layers_0": {"attn_norm": {"scale": np.ones(32, np.float32)},
                       "attn": {"q_proj": {"kernel": _lr(32, 48)}},
                       "mlp": {"down_proj": {"kernel": _lr(48, 32)}}},
          "lm_head": {"kernel": _lr(32, 20)}}
NAMES = ["layers_0/attn/q_proj/kernel", "layers_0/mlp/down_proj/kernel"]


def _get(tree, path):
  for k in path.split("/"):
    tree = tree[k]
  return tree


def test_pure_transform_and_stats():
  before = copy.deepcopy(PARAMS)
  ids = {p: id(_get(PARAMS, p)) for p in NAMES}
  new, stats = transform.compress(PARAMS, transform.CompressionConfig(param_ratio=0.4,
                                                                      tiles_per_matrix=6))
  for path in NAMES:
    assert id(_get(PARAMS, path)) == ids[path]
  jax.tree_util.tree_map(np.testing.assert_array_equal, PARAMS, before)
  assert [r["name"] for r in stats["matrices"]] == NAMES
  assert isinstance(_get(new, NAMES[0]), leaves.TiledLowRank)
  assert new["embed"]["embedding"] is PARAMS["embed"]["embedding"]
  assert isinstance(new["lm_head"]["kernel"], np.ndarray)  # not in the default include.
  row = stats["matrices"][0]
  for key in ("shape", "rel_fro_error", "ranks", "params_dense", "params_stored", "bytes"):
    assert key in row
  assert stats["params_dense"] == 2 * 32 * 48
  assert abs(stats["param_ratio"] - 0.4) < 0.06
  assert stats["bytes_compressed"] < stats["bytes_dense"]


def test_error_falls_with_budget_and_exact_at_one():
  errors = []
  for ratio in (0.1, 0.3, 0.6, 1.0):
    _, stats = transform.compress(PARAMS, {"param_ratio": ratio, "tiles_per_matrix": 6})
    errors.append(sum(r["rel_fro_error"] for r in stats["matrices"]))
  assert all(b < a for a, b in zip(errors, errors[1:])), errors
  assert errors[-1] < 1e-6
  new, _ = transform.compress(PARAMS, {"param_ratio": 1.0, "tiles_per_matrix": 6})
  for path in NAMES:
    np.testing.assert_allclose(np.asarray(_get(new, path).materialize()), _get(PARAMS, path),
                               atol=1e-6)


@pytest.mark.parametrize("override,match", [
    ({"param_ratio": 0.0}, "param_ratio"), ({"param_ratio": 1.5}, "param_ratio"),
    ({"tiling": "hexagon"}, "tiling.*hexagon"), ({"tau": -1.0}, "tau"),
    ({"tiling": "penrose", "tile_lengths": ((7, 5), (16, 8))}, "tile_lengths"),
    ({"tiling": "grid", "tile_lengths": (5, 16)}, "tile_lengths"),
    ({"spectral": "wavelet"}, "spectral"), ({"bogus": 1}, "bogus"), ({"svd_method": "qr"}, "svd_method"),
    ({"whiten": True}, "grams"), ({"rank_policy": "fixed"}, "fixed_ranks"),
])
def test_validation_names_field(override, match):
  with pytest.raises(ValueError, match=match):
    transform.compress(PARAMS, override)


def test_config_dict_and_policies():
  cfg = ml_collections.ConfigDict({"rank_policy": "energy", "energy": 0.95, "tiling": "grid",
                                   "tiles_per_matrix": 4})
  _, stats = transform.compress(PARAMS, cfg)
  assert stats["num_matrices"] == 2
  _, stats = transform.compress(PARAMS, {"rank_policy": "fixed", "fixed_ranks": 3,
                                         "tiling": "single"})
  assert stats["matrices"][0]["ranks"]["max"] == 3


def test_whitened_compress_lowers_output_error():
  x = RNG.normal(size=(400, 32)) * np.logspace(1, -1, 32)
  grams = {NAMES[0]: gram_from_activations(x)}
  cfg = dict(include=r".*q_proj/kernel$", param_ratio=0.25, tiles_per_matrix=4)
  _, white = transform.compress(PARAMS, dict(cfg, whiten=True, grams=grams))
  w = _get(PARAMS, NAMES[0]).astype(np.float64)
  assert white["matrices"][0]["out_rel_error"] < 1.0
  assert white["matrices"][0]["damping"] >= 1e-2
  # Output error of the plain result, measured with the same Gram.
  plain_new, _ = transform.compress(PARAMS, cfg)
  d = w - np.asarray(_get(plain_new, NAMES[0]).materialize(), np.float64)
  plain_out = np.sqrt(np.trace(d.T @ grams[NAMES[0]] @ d) / np.trace(w.T @ grams[NAMES[0]] @ w))
  assert white["matrices"][0]["out_rel_error"] < plain_out


def test_rtn_baseline_and_quantized_factors():
  _, s8 = transform.compress(PARAMS, {"method": "rtn", "quantize": "int8", "group_size": 16})
  _, s4 = transform.compress(PARAMS, {"method": "rtn", "quantize": "int4", "group_size": 16})
  e8 = max(r["rel_fro_error"] for r in s8["matrices"])
  e4 = max(r["rel_fro_error"] for r in s4["matrices"])
  assert 0 < e8 < 0.02 < e4 < 0.2
  assert s4["bytes_compressed"] < s8["bytes_compressed"] < s8["bytes_dense"] / 3
  _, sq = transform.compress(PARAMS, {"param_ratio": 0.5, "quantize": "int8", "group_size": 16,
                                      "tiles_per_matrix": 4})
  assert sq["bytes_compressed"] < 0.25 * sq["bytes_dense"]


def test_spectral_nothing_dropped_is_lossless():
  _, stats = transform.compress(PARAMS, {"param_ratio": 1.0, "spectral": "dct",
                                         "spectral_scope": "block", "tau": 0.0,
                                         "tiles_per_matrix": 4})
  assert max(r["rel_fro_error"] for r in stats["matrices"]) < 1e-6
  # Indices are counted: a lossless spectral store costs more than dense.
  assert stats["param_ratio"] > 1.5
