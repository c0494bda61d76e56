"""Sensitivity allocator: the exact knapsack, measured KLs on a tiny model, the compress job."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import compress as compress_config
from penrose_jax.compression import sensitivity, streaming
from penrose_jax.compression.transform import as_compression_config
from penrose_jax.io import model_registry
from penrose_jax.jobs import compress
from penrose_jax.models import llama


def test_knapsack_truncates_the_least_sensitive_matrix():
  table = {"a": {"0.5": 0.9}, "b": {"0.5": 0.1}}
  ratios = sensitivity.knapsack_ratios(table, {"a": 100, "b": 100}, 0.75, (0.5, 1.0), unit=1)
  assert ratios == {"a": 1.0, "b": 0.5}


def test_knapsack_equals_brute_force_on_random_instances():
  rng = np.random.default_rng(0)
  cands = (0.25, 0.5, 0.75, 1.0)
  for _ in range(20):
    paths = [f"m{i}" for i in range(5)]
    sizes = {p: int(rng.integers(10, 60)) * 4 for p in paths}
    table = {p: {sensitivity.ratio_key(c): float(v) for c, v in
                 zip(cands[:-1], np.sort(rng.random(3))[::-1])} for p in paths}
    ratio = float(rng.uniform(0.4, 0.9))
    got = sensitivity.knapsack_ratios(table, sizes, ratio, cands, unit=1)

    def loss(choice):
      return sum(0.0 if c == 1.0 else table[p][sensitivity.ratio_key(c)]
                 for p, c in zip(paths, choice))

    feasible = [ch for ch in itertools.product(cands, repeat=len(paths))
                if sum(int(np.ceil(c * sizes[p])) for p, c in zip(paths, ch))
                <= ratio * sum(sizes.values())]
    best = min(loss(ch) for ch in feasible)
    assert sum(int(np.ceil(got[p] * sizes[p])) for p in paths) <= ratio * sum(sizes.values())
    assert loss([got[p] for p in paths]) == pytest.approx(best)


def test_knapsack_names_an_infeasible_budget_and_a_missing_row():
  with pytest.raises(ValueError, match="below the smallest candidate"):
    sensitivity.knapsack_ratios({"a": {"0.5": 1.0}}, {"a": 100}, 0.2, (0.5, 1.0), unit=1)
  with pytest.raises(ValueError, match="no row for"):
    sensitivity.knapsack_ratios({}, {"a": 100}, 0.5, (0.5, 1.0))


def test_head_after_blocks_equals_the_forward_logits(tmp_path):
  model = model_registry.load("tiny", cache_dir=tmp_path)
  cfg, params = model.config, model.params
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 9)), jnp.int32)
  h = llama.embed_tokens(params, tokens)
  for i in range(cfg.num_layers):
    h = llama.apply_block(params[f"layers_{i}"], h, cfg)
  want = llama.forward(params, tokens, cfg).logits
  np.testing.assert_allclose(llama.apply_head(params, h, cfg), want, rtol=1e-5, atol=1e-5)


def test_measured_kl_is_positive_and_falls_as_the_ratio_grows(tmp_path):
  model = model_registry.load("tiny", cache_dir=tmp_path)
  source = model_registry.open_stream("tiny", cache_dir=tmp_path)
  cfg = as_compression_config({"tiling": "single", "budget_scope": "sensitivity",
                               "whiten": True, "damping": 1e-4, "min_rank": 1})
  tokens = np.random.default_rng(1).integers(0, model.config.vocab_size, (6, 32))
  x0 = np.asarray(llama.embed_tokens(model.params, tokens), np.float32)
  globals_ = {k: v for k, v in model.params.items() if not k.startswith("layers_")}
  table, sizes = sensitivity.measure(source.read_layer, globals_, x0, cfg,
                                     streaming.StreamFunctions(model.config), model.config,
                                     (0.2, 0.6, 1.0), windows=3)
  assert len(table) == model.config.num_layers * 7 and set(sizes) == set(table)
  rows = np.array([[row["0.2"], row["0.6"]] for row in table.values()])
  assert (rows >= -1e-6).all()
  # Keeping more of a matrix disturbs the output less, for nearly every matrix.
  assert np.mean(rows[:, 0] > rows[:, 1]) >= 0.8


def test_compress_job_with_sensitivity_scope_meets_the_budget(tmp_path):
  config = compress_config.get_config("quick")
  config.compression.budget_scope = "sensitivity"
  config.compression.param_ratio = 0.6
  config.compression.sensitivity_candidates = (0.3, 0.6, 1.0)
  config.compression.sensitivity_windows = 2
  report = compress.run(config, tmp_path / "run", spectra_cache_dir=tmp_path / "cache")
  ratios = report["sensitivity"]["matrix_ratios"]
  assert len(ratios) == len(report["matrices"]) and set(ratios.values()) <= {0.3, 0.6, 1.0}
  assert report["param_ratio"] <= 0.6 + 0.02
  assert "sensitivity" in report["stage_s"]
  assert (tmp_path / "run" / "sensitivity_ratios.png").stat().st_size > 0
  cached = list((tmp_path / "cache").glob("sensitivity_*.json"))
  assert len(cached) == 1
  # Another ratio reuses the measured table and picks more dense matrices.
  config.compression.param_ratio = 0.8
  again = compress.run(config, tmp_path / "run08", spectra_cache_dir=tmp_path / "cache")
  assert again["sensitivity"]["reused_from"] == str(cached[0])
  assert "sensitivity" not in again["stage_s"]
  assert sum(again["sensitivity"]["matrix_ratios"].values()) > sum(ratios.values())
  stored = json.loads((tmp_path / "run" / "stream" / "matrix_ratios.json").read_text())
  assert stored == ratios


def test_tiled_run_takes_the_single_svd_ratios_from_the_sweep_cache(tmp_path):
  config = compress_config.get_config("quick")
  config.compression.budget_scope = "sensitivity"
  config.compression.param_ratio = 0.6
  config.compression.sensitivity_candidates = (0.3, 0.6, 1.0)
  config.compression.sensitivity_tiling = "single"
  config.eval.enabled = False
  cache = tmp_path / "cache"
  single = compress.run(config, tmp_path / "single", spectra_cache_dir=cache)
  config.compression.tiling = "grid"
  config.compression.tiles_per_matrix = 4
  grid = compress.run(config, tmp_path / "grid", spectra_cache_dir=cache)
  assert grid["sensitivity"]["reused_from"] == str(next(cache.glob("sensitivity_*.json")))
  assert "sensitivity" not in grid["stage_s"]  # no pass of its own
  assert grid["sensitivity"]["matrix_ratios"] == single["sensitivity"]["matrix_ratios"]
  assert grid["param_ratio"] <= 0.6 + 0.02
  # Measured with its own layout, the grid run needs its own table.
  config.compression.sensitivity_tiling = ""
  own = compress.run(config, tmp_path / "grid_own", spectra_cache_dir=cache)
  assert own["sensitivity"]["reused_from"] == "" and "sensitivity" in own["stage_s"]
  assert len(list(cache.glob("sensitivity_*.json"))) == 2


@pytest.mark.parametrize("field,value,message", [
    ("sensitivity_candidates", (0.5, 1.5), "sensitivity_candidates"),
    ("sensitivity_windows", -1, "sensitivity_windows"),
    ("sensitivity_tiling", "hexagonal", "sensitivity_tiling"),
])
def test_bad_sensitivity_settings_name_the_field(field, value, message):
  with pytest.raises(ValueError, match=message):
    as_compression_config({field: value})
