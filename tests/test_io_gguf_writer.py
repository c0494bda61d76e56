"""GGUF out (io/gguf_writer.py): a written model read back by this package gives the logits of
the weights the file holds: exactly the model's for float types and for quantized kernels whose
groups line up with GGML's 32-blocks, the GGML-dequantized weights' otherwise."""

import gguf
import jax
import numpy as np
import pytest

from penrose_jax.compression.leaves import QuantizedDense
from penrose_jax.compression.transform import compress
from penrose_jax.io import load_model
from penrose_jax.io.gguf_writer import write_gguf
from penrose_jax.io.reader_base import permute_rope_rows, unpermute_rope_rows
from penrose_jax.models import llama
from penrose_jax.models.linear import dense_equivalent
from tests.test_io_gguf import H, KV, write_tiny_gguf

Q = gguf.GGMLQuantizationType
TOKENS = np.array([[5, 17, 200, 3, 99, 42, 7, 260]], np.int32)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  path = tmp_path_factory.mktemp("src") / "tiny.gguf"
  write_tiny_gguf(path)
  return path, load_model(path)


def _logits(params, config):
  return np.asarray(llama.forward(params, TOKENS, config).logits)


def _file_round_trip(matrix, qtype, heads):
  """What a (in, out) kernel becomes after writing as qtype and reading back."""
  stored = matrix.T if heads == 0 else permute_rope_rows(matrix.T, heads)
  back = gguf.quants.dequantize(gguf.quants.quantize(np.ascontiguousarray(stored), qtype), qtype)
  back = back.reshape(stored.shape)
  return (back if heads == 0 else unpermute_rope_rows(back, heads)).T


def test_float_types_round_trip_exactly(source, tmp_path):
  path, model = source
  info = write_gguf(tmp_path / "out.gguf", model.params, path, dense_type="F32",
                    embed_type="F32")
  back = load_model(tmp_path / "out.gguf")
  assert back.config == model.config
  assert back.tokenizer.encode("the cat") == model.tokenizer.encode("the cat")
  for a, b in zip(jax.tree_util.tree_leaves(model.params), jax.tree_util.tree_leaves(back.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(_logits(back.params, back.config),
                                _logits(model.params, model.config))
  assert info["types"] == {"F32": len(jax.tree_util.tree_leaves(model.params))}
  assert info["file_size"] == (tmp_path / "out.gguf").stat().st_size
  assert info["requantization_rel_error"] == 0.0


@pytest.mark.parametrize("quantize,qtype", [("int8", Q.Q8_0), ("int4", Q.Q4_0),
                                            ("int3", Q.Q4_0)])
def test_quantized_kernels_are_copied_block_for_block(source, tmp_path, quantize, qtype):
  path, model = source
  compressed, _ = compress(model.params, {"method": "rtn", "quantize": quantize})
  info = write_gguf(tmp_path / "q.gguf", compressed, path, embed_type="F32")
  back = load_model(tmp_path / "q.gguf")
  expected = dense_equivalent(compressed)
  # Symmetric integers times a float16 scale per 64 inputs are GGML blocks already: the file
  # holds the checkpoint's weights exactly.
  for a, b in zip(jax.tree_util.tree_leaves(back.params), jax.tree_util.tree_leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  kernels = 7 * back.config.num_layers
  assert info["types"][qtype.name] == kernels and info["exact_kernels"] == kernels
  assert info["requantization_rel_error"] == 0.0
  # The kernels' bytes are GGML's: 34 bytes per 32 weights (Q8_0), 18 (Q4_0).
  weights = sum(np.size(k) for k in jax.tree_util.tree_leaves(
      {i: expected[f"layers_{i}"] for i in range(back.config.num_layers)}) if np.ndim(k) == 2)
  assert info["projection_bytes"] == weights // 32 * {Q.Q8_0: 34, Q.Q4_0: 18}[qtype]


def test_groups_that_split_a_block_are_rounded_again(source, tmp_path):
  path, model = source
  compressed, _ = compress(model.params, {"method": "rtn", "quantize": "int4", "group_size": 16})
  info = write_gguf(tmp_path / "q16.gguf", compressed, path, embed_type="F32")
  back = load_model(tmp_path / "q16.gguf")
  assert info["exact_kernels"] == 0 and 0.0 < info["requantization_rel_error"] < 0.2
  for i in range(back.config.num_layers):
    for block, proj in (("attn", "q_proj"), ("attn", "k_proj"), ("mlp", "down_proj")):
      leaf = compressed[f"layers_{i}"][block][proj]["kernel"]
      assert isinstance(leaf, QuantizedDense)
      heads = {"q_proj": H, "k_proj": KV}.get(proj, 0)
      np.testing.assert_array_equal(np.asarray(back.params[f"layers_{i}"][block][proj]["kernel"]),
                                    _file_round_trip(leaf.materialize_host(), Q.Q4_0, heads))


def test_low_rank_leaves_are_multiplied_out_and_bad_types_named(source, tmp_path):
  path, model = source
  compressed, _ = compress(model.params, {"tiling": "single", "param_ratio": 0.5,
                                          "budget_scope": "matrix"})
  write_gguf(tmp_path / "lr.gguf", compressed, path, dense_type="F32", embed_type="F32")
  back = load_model(tmp_path / "lr.gguf")
  # The file holds each leaf's host (numpy) product of its factors.
  dense = jax.tree_util.tree_map(
      lambda leaf: leaf.materialize_host() if hasattr(leaf, "materialize_host") else leaf,
      compressed, is_leaf=lambda leaf: hasattr(leaf, "materialize_host"))
  for a, b in zip(jax.tree_util.tree_leaves(back.params), jax.tree_util.tree_leaves(dense)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(_logits(back.params, back.config), _logits(dense, model.config))
  with pytest.raises(ValueError, match="dense_type='Q5_K'"):
    write_gguf(tmp_path / "bad.gguf", model.params, path, dense_type="Q5_K")


def test_source_bytes_count_the_files_quantized_blocks(tmp_path):
  from penrose_jax.io import model_registry
  from penrose_jax.jobs.sweep_merge import projection_paths
  path = tmp_path / "q41.gguf"
  kernels = [f"blk.{i}.{name}.weight" for i in range(2)
             for name in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
                          "ffn_down")]
  write_tiny_gguf(path, types={name: Q.Q4_1 for name in kernels})
  model = load_model(path)
  paths = projection_paths(model.config.num_layers)
  weights = sum(np.size(model.params[p.split("/")[0]][p.split("/")[1]][p.split("/")[2]]["kernel"])
                for p in paths)
  out = model_registry.source_bytes(str(path), paths)
  assert out["bytes"] == weights // 32 * 20  # Q4_1: 32 weights in 20 bytes (5 bits each)
  assert out["types"] == {"Q4_1": 14}
  assert model_registry.source_bytes("tiny", paths) is None
