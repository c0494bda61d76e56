"""GPTQ (compression/gptq.py): beats RTN on the H-weighted error at equal bytes, the stored leaf
is RTN's, its matmul equals its dense matrix, and the compress job runs it streamed."""

import jax
import numpy as np
import pytest

from configs import compress as compress_config
from penrose_jax.compression import gptq
from penrose_jax.compression.leaves import QuantizedDense, rtn_quantize_dense
from penrose_jax.compression.transform import as_compression_config, compress
from penrose_jax.io import model_registry
from penrose_jax.jobs import compress as compress_job


def _correlated_problem(seed=0, n=192, out=80, samples=1024):
  """A kernel and the Gram of inputs with correlated, unevenly scaled features."""
  rng = np.random.default_rng(seed)
  mix = rng.normal(size=(n, n)) / np.sqrt(n) + 0.3 * np.eye(n)
  x = (rng.normal(size=(samples, n)) @ mix) * np.exp(rng.normal(size=n))
  w = 0.05 * rng.normal(size=(n, out))
  return w, x.T @ x


@pytest.mark.parametrize("bits", [3, 4, 8])
@pytest.mark.parametrize("act_order", [True, False])
def test_gptq_output_error_below_rtn_at_equal_bytes(bits, act_order):
  w, gram = _correlated_problem()
  rtn = rtn_quantize_dense(w, bits, 64)
  leaf, info = gptq.gptq_quantize(w, gram, gptq.GPTQSettings(bits=bits, act_order=act_order))
  rtn_error = gptq.output_error(w, rtn.materialize_host(), gram)
  gptq_error = gptq.output_error(w, leaf.materialize_host(), gram)
  assert gptq_error < 0.7 * rtn_error, (gptq_error, rtn_error)
  assert isinstance(leaf, QuantizedDense)
  assert leaf.nbytes() == rtn.nbytes()
  assert leaf.weight.q.shape == rtn.weight.q.shape
  assert leaf.weight.scale.shape == rtn.weight.scale.shape
  assert leaf.weight.scale.dtype == rtn.weight.scale.dtype
  assert info["damping"] == pytest.approx(gptq.DEFAULT_DAMPING)
  q = np.asarray(leaf.weight.q)
  assert q.min() >= -(2 ** (bits - 1)) and q.max() <= 2 ** (bits - 1) - 1


def test_clipping_search_never_loses_to_max_scale_on_the_group_error():
  w, gram = _correlated_problem(seed=1, n=64, out=32)
  searched = gptq.clipped_group_scale(w, gram, 7)
  plain = gptq.clipped_group_scale(w, gram, 7, clip_grid=(1.0,))
  def group_error(scale):
    diff = w - np.clip(np.rint(w / scale), -8, 7) * scale
    return np.einsum("gj,gj->j", diff, gram @ diff)
  assert np.all(group_error(searched) <= group_error(plain) + 1e-12)
  assert np.any(searched < plain)


def test_quantized_leaf_matmul_equals_its_dense_matrix():
  w, gram = _correlated_problem(seed=2, n=100, out=48)  # 100 rows: a partial last group
  leaf, _ = gptq.gptq_quantize(w, gram, gptq.GPTQSettings(bits=4))
  x = np.random.default_rng(3).normal(size=(5, 100)).astype(np.float32)
  dense = leaf.materialize_host()
  assert dense.shape == (100, 48)
  np.testing.assert_allclose(np.asarray(jax.jit(lambda a: leaf.matmul(a))(x)), x @ dense,
                             rtol=1e-5, atol=1e-5)


def test_dead_inputs_are_zeroed_and_bad_grams_named():
  w, gram = _correlated_problem(seed=4, n=64, out=16)
  gram[5, :] = gram[:, 5] = 0.0
  leaf, info = gptq.gptq_quantize(w, gram, gptq.GPTQSettings(bits=4))
  assert info["dead_inputs"] == 1
  np.testing.assert_array_equal(leaf.materialize_host()[5], 0.0)
  with pytest.raises(ValueError, match=r"Gram of shape \(3, 3\) does not match"):
    gptq.gptq_quantize(w, np.eye(3))
  with pytest.raises(ValueError, match="bits=5"):
    gptq.GPTQSettings(bits=5)


def test_config_validation_and_in_memory_compress():
  with pytest.raises(ValueError, match="quantize='none' but method='gptq'"):
    as_compression_config({"method": "gptq"})
  with pytest.raises(ValueError, match="gptq_clip_grid"):
    as_compression_config({"method": "gptq", "quantize": "int4", "gptq_clip_grid": (1.5,)})
  w, gram = _correlated_problem(seed=5, n=64, out=32)
  params = {"layers_0": {"mlp": {"up_proj": {"kernel": w.astype(np.float32)}}}}
  with pytest.raises(ValueError, match="config.grams=None"):
    compress(params, {"method": "gptq", "quantize": "int3"})
  new, stats = compress(params, {"method": "gptq", "quantize": "int3",
                                 "grams": {"layers_0/mlp/up_proj/kernel": gram}})
  leaf = new["layers_0"]["mlp"]["up_proj"]["kernel"]
  assert isinstance(leaf, QuantizedDense) and leaf.weight.bits == 3
  # int3: 3/8 byte per weight plus a float16 scale per 64 inputs and output column.
  assert stats["bytes_compressed"] == 64 * 32 * 3 // 8 + 2 * 32


def test_quick_compress_job_with_gptq_streams_and_evaluates(tmp_path):
  model_dir = model_registry.build_tiny_model(tmp_path / "tiny2", num_layers=2)
  config = compress_config.get_config("quick")
  config.model = str(model_dir)
  config.compression.method = "gptq"
  config.compression.quantize = "int4"
  config.eval.max_windows = 2
  report = compress_job.run(config, tmp_path / "gptq")
  rtn_config = compress_config.get_config("quick")
  rtn_config.model = str(model_dir)
  rtn_config.compression.method = "rtn"
  rtn_config.compression.quantize = "int4"
  rtn_config.eval.enabled = False
  rtn = compress_job.run(rtn_config, tmp_path / "rtn")
  assert report["calibration_windows"] == config.calibration.num_windows
  assert report["bytes_compressed"] == rtn["bytes_compressed"]
  assert len(report["matrices"]) == 2 * 7
  assert all("out_rel_error" in row for row in report["matrices"])
  assert np.isfinite(report["ppl_compressed"])
  loaded = model_registry.load(str(tmp_path / "gptq" / "model"))
  kernel = loaded.params["layers_1"]["mlp"]["down_proj"]["kernel"]
  assert isinstance(kernel, QuantizedDense) and kernel.weight.bits == 4


def test_quantize_overrides_pick_bits_per_matrix():
  rng = np.random.default_rng(6)
  params = {"layers_0": {"attn": {"v_proj": {"kernel": rng.normal(size=(64, 32))},
                                  "q_proj": {"kernel": rng.normal(size=(64, 64))}}}}
  new, stats = compress(params, {"method": "rtn", "quantize": "int3",
                                 "quantize_overrides": ("attn/(k|v|o)_proj=int4",)})
  assert new["layers_0"]["attn"]["v_proj"]["kernel"].weight.bits == 4
  assert new["layers_0"]["attn"]["q_proj"]["kernel"].weight.bits == 3
  assert stats["bytes_compressed"] == (64 * 32 // 2 + 2 * 32) + (64 * 64 * 3 // 8 + 2 * 64)
  with pytest.raises(ValueError, match="expected 'regex=quant'"):
    as_compression_config({"method": "rtn", "quantize": "int3", "quantize_overrides": ("v",)})
  with pytest.raises(ValueError, match="quant 'int5' is not one of"):
    as_compression_config({"method": "rtn", "quantize": "int3",
                           "quantize_overrides": ("v_proj=int5",)})
