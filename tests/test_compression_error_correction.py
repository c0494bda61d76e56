"""Low-rank correction of rounding errors (compression/error_correction.py): it lowers the
output error of RTN and GPTQ kernels, costs the factors' int8 bytes, multiplies like its dense
matrix and survives a checkpoint."""

import jax
import numpy as np
import pytest

from penrose_jax.compression import error_correction, gptq
from penrose_jax.compression.leaves import CorrectedQuantizedDense, rtn_quantize_dense
from penrose_jax.compression.transform import as_compression_config, compress
from penrose_jax.io import restore_params, save_params
from tests.test_compression_gptq import _correlated_problem


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_correction_lowers_output_error_at_the_factors_bytes(method):
  w, gram = _correlated_problem(seed=7, n=192, out=80)
  base = rtn_quantize_dense(w, 3, 64) if method == "rtn" else gptq.gptq_quantize(
      w, gram, gptq.GPTQSettings(bits=3))[0]
  errors = [gptq.output_error(w, base.materialize_host(), gram)]
  for rank in (4, 16):
    leaf = error_correction.correct(base, w, gram, rank)
    assert isinstance(leaf, CorrectedQuantizedDense)
    errors.append(gptq.output_error(w, leaf.materialize_host(), gram))
    # int8 factors, groups of 64 along their long axis (padded: 80 -> 128), float16 scales.
    factor_bytes = rank * (192 + 128) + 2 * rank * (192 // 64 + 128 // 64)
    assert leaf.nbytes() == base.nbytes() + factor_bytes
  assert errors[0] > errors[1] > errors[2], errors


def test_corrected_leaf_matmul_and_checkpoint_round_trip(tmp_path):
  w, gram = _correlated_problem(seed=8, n=128, out=64)
  leaf = error_correction.correct(rtn_quantize_dense(w, 4, 64), w, gram, 8)
  x = np.random.default_rng(9).normal(size=(3, 128)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(jax.jit(lambda a: leaf.matmul(a))(x)),
                             x @ leaf.materialize_host(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(leaf.materialize()), leaf.materialize_host(),
                             rtol=1e-5, atol=1e-6)
  save_params(tmp_path / "ckpt", {"k": leaf})
  restored, _ = restore_params(tmp_path / "ckpt")
  assert isinstance(restored["k"], CorrectedQuantizedDense)
  np.testing.assert_array_equal(restored["k"].materialize_host(), leaf.materialize_host())
  with pytest.raises(ValueError, match="correction rank=0"):
    error_correction.correct(rtn_quantize_dense(w, 4, 64), w, gram, 0)


def test_config_checks_and_in_memory_compress():
  with pytest.raises(ValueError, match="needs method 'rtn' or 'gptq'"):
    as_compression_config({"correction_rank": 4})
  w, gram = _correlated_problem(seed=10, n=64, out=32)
  params = {"layers_0": {"attn": {"o_proj": {"kernel": w.astype(np.float32)}}}}
  new, stats = compress(params, {"method": "rtn", "quantize": "int4", "correction_rank": 2,
                                 "grams": {"layers_0/attn/o_proj/kernel": gram}})
  assert isinstance(new["layers_0"]["attn"]["o_proj"]["kernel"], CorrectedQuantizedDense)
  assert stats["bytes_compressed"] == 64 * 32 // 2 + 2 * 32 + 2 * (64 + 32) + 2 * 2 * 2
