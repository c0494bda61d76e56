"""The compress job: quick config end to end, report fields, resume after a kill, bad configs."""

import json

import numpy as np
import pytest

from configs import compress as compress_config
from penrose_jax import io as pio
from penrose_jax.compression import streaming
from penrose_jax.io import model_registry
from penrose_jax.jobs import compress
from penrose_jax.models import llama


@pytest.fixture(scope="module")
def four_layer_model(tmp_path_factory):
  return model_registry.build_tiny_model(tmp_path_factory.mktemp("m") / "tiny4", num_layers=4)


def _config(model_dir, **compression):
  config = compress_config.get_config("quick")
  config.model = str(model_dir)
  # These tests exercise the two-pass streaming job: a model-wide budget over Penrose tiles.
  compression = {"tiling": "penrose", "budget_scope": "global", "param_ratio": 0.6,
                 **compression}
  for key, value in compression.items():
    config.compression[key] = value
  return config


def _arrays(model_dir):
  loaded = model_registry.load(str(model_dir))
  import jax
  return [np.asarray(a) for a in jax.tree_util.tree_leaves(loaded.params)]


def test_quick_compress_writes_checkpoint_report_and_pictures(tmp_path, four_layer_model):
  report = compress.run(_config(four_layer_model), tmp_path)
  on_disk = json.loads((tmp_path / "report.json").read_text())
  for key in ("job", "config", "wall_s", "model", "params_dense", "params_compressed",
              "param_ratio", "bytes_compressed", "ppl_dense", "ppl_compressed", "hidden_kl",
              "hidden_kl_per_layer", "matrices", "peak_rss_mib"):
    assert key in on_disk, key
  assert on_disk["job"] == "compress"
  # Where the time went: every streaming stage ran and the stages fit inside the wall time.
  stages = on_disk["stage_s"]
  assert {"load", "calibrate", "pass1_calibrate", "pass1_factor", "factor", "build_leaves",
          "write", "eval"} <= set(stages), stages
  assert all(v >= 0 for v in stages.values())
  assert sum(stages.values()) <= on_disk["wall_s"] + 1e-6
  # Global budget: stored parameters hit the target within one tile's rank step.
  max_step = max(sum(r["shape"]) for r in report["matrices"])
  assert abs(report["params_compressed"] - 0.6 * report["params_dense"]) <= max_step
  assert len(report["matrices"]) == 4 * 7
  for row in report["matrices"]:
    assert {"name", "shape", "rel_fro_error"} <= set(row)
  assert len(report["hidden_kl_per_layer"]) == 4
  assert list(tmp_path.glob("tiling_*.png"))
  loaded = model_registry.load(str(tmp_path / "model"))
  assert llama.count_params(loaded.params) == report["model_params_compressed"]
  out = llama.forward(loaded.params, np.array([[1, 2, 3]]), loaded.config)
  assert np.isfinite(np.asarray(out.logits)).all()


def test_killed_run_resumes_to_the_same_checkpoint(tmp_path, four_layer_model, monkeypatch):
  config = _config(four_layer_model)
  config.eval.enabled = False
  compress.run(config, tmp_path / "straight")

  real = streaming.compress_layer
  def dies_at_layer_2(key, *args, **kwargs):
    if key == "layers_2":
      raise KeyboardInterrupt("simulated kill")
    return real(key, *args, **kwargs)
  monkeypatch.setattr(streaming, "compress_layer", dies_at_layer_2)
  with pytest.raises(KeyboardInterrupt):
    compress.run(config, tmp_path / "resumed")
  state = json.loads((tmp_path / "resumed" / "stream" / "state.json").read_text())
  assert state["next_layer"] == 2
  assert not (tmp_path / "resumed" / "model" / "model.json").exists()
  monkeypatch.setattr(streaming, "compress_layer", real)
  compress.run(config, tmp_path / "resumed")
  for a, b in zip(_arrays(tmp_path / "straight" / "model"), _arrays(tmp_path / "resumed" / "model")):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("field,value,message", [
    ("param_ratio", 1.5, "param_ratio=1.5 must be in"),
    ("tiling", "hexagonal", "tiling='hexagonal' is invalid"),
    ("rank_policy", "magic", "rank_policy='magic' is invalid"),
])
def test_invalid_config_fails_before_any_work(tmp_path, four_layer_model, field, value, message):
  with pytest.raises(ValueError, match=message):
    compress.run(_config(four_layer_model, **{field: value}), tmp_path)
  assert not (tmp_path / "model").exists()


def test_rtn_baseline_and_plain_svd_variants(tmp_path, four_layer_model):
  rtn = compress.run(_config(four_layer_model, method="rtn", quantize="int8", whiten=False),
                     tmp_path / "rtn")
  assert rtn["bytes_compressed"] < 0.3 * rtn["bytes_dense"]
  single = compress.run(_config(four_layer_model, tiling="single", whiten=False,
                                param_ratio=0.5), tmp_path / "single")
  assert single["param_ratio"] == pytest.approx(0.5, abs=0.05)


def test_spectra_cache_skips_pass1_and_gives_the_same_model(tmp_path, four_layer_model):
  """A run at another param_ratio reuses pass-1 spectra and equals an uncached run."""
  cache = tmp_path / "cache"
  first = compress.run(_config(four_layer_model, param_ratio=0.6), tmp_path / "a",
                       spectra_cache_dir=cache)
  assert first["spectra_reused_from"] == "" and len(list(cache.glob("spectra_*.npz"))) == 1
  cached = compress.run(_config(four_layer_model, param_ratio=0.4, quantize="int8"),
                        tmp_path / "b", spectra_cache_dir=cache)
  assert cached["spectra_reused_from"].startswith(str(cache))
  assert "pass1_calibrate" not in cached["stage_s"]
  plain = compress.run(_config(four_layer_model, param_ratio=0.4, quantize="int8"), tmp_path / "c")
  assert json.loads((tmp_path / "b/stream/ranks.json").read_text()) == json.loads(
      (tmp_path / "c/stream/ranks.json").read_text())
  assert cached["params_compressed"] == plain["params_compressed"]
  for x, y in zip(_arrays(tmp_path / "b/model"), _arrays(tmp_path / "c/model")):
    np.testing.assert_array_equal(x, y)
  # Another tiling is another cache file, not a stale hit.
  grid_config = _config(four_layer_model, tiling="grid")
  grid_config.eval.enabled = False
  grid = compress.run(grid_config, tmp_path / "d", spectra_cache_dir=cache)
  assert grid["spectra_reused_from"] == "" and len(list(cache.glob("spectra_*.npz"))) == 2
