"""Hugging Face directories: export_hf -> load_model round trips, sharding, bf16 and errors."""

from __future__ import annotations

import json

import flax.struct
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from penrose_jax.io import (CheckpointFormatError, TextTokenizer, export_hf, load_model,
                            open_model)
from penrose_jax.models.config import tiny_config


def random_params(config, seed: int = 0) -> dict:
  """A params tree with the contract's layout and random float32 values."""
  rng = np.random.default_rng(seed)
  c = config

  def arr(*shape):
    return jnp.asarray(rng.normal(size=shape).astype(np.float32))

  params = {"embed": {"embedding": arr(c.vocab_size, c.hidden_size)},
            "final_norm": {"scale": arr(c.hidden_size)}}
  if not c.tie_embeddings:
    params["lm_head"] = {"kernel": arr(c.hidden_size, c.vocab_size)}
  q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
  for i in range(c.num_layers):
    widths = {"q_proj": q, "k_proj": kv, "v_proj": kv}
    attn = {name: {"kernel": arr(c.hidden_size, width)} for name, width in widths.items()}
    attn["o_proj"] = {"kernel": arr(q, c.hidden_size)}
    if c.attention_bias:
      for name, width in widths.items():
        attn[name]["bias"] = arr(width)
    params[f"layers_{i}"] = {
        "attn_norm": {"scale": arr(c.hidden_size)}, "attn": attn,
        "mlp_norm": {"scale": arr(c.hidden_size)},
        "mlp": {"gate_proj": {"kernel": arr(c.hidden_size, c.intermediate_size)},
                "up_proj": {"kernel": arr(c.hidden_size, c.intermediate_size)},
                "down_proj": {"kernel": arr(c.intermediate_size, c.hidden_size)}}}
  return params


def tiny_tokenizer() -> TextTokenizer:
  chars = [chr(c) for c in range(ord("!"), ord("~") + 1)] + ["Ġ", "Ċ"]
  tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + chars
  metadata = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens,
              "tokenizer.ggml.merges": [],
              "tokenizer.ggml.token_type": [3, 3, 3] + [1] * len(chars),
              "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
              "tokenizer.chat_template": "{{ messages[0]['content'] }}"}
  return TextTokenizer.from_gguf_metadata(metadata)


def assert_trees_identical(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.asarray(x).dtype == np.asarray(y).dtype == np.float32
    assert np.array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("overrides", [
    {}, {"tie_embeddings": True, "attention_bias": True, "bos_token_id": 1, "eos_token_id": 2},
    {"head_dim": 16, "num_kv_heads": 4}])
def test_export_load_bit_identical(tmp_path, overrides):
  config = tiny_config(**overrides)
  params = random_params(config)
  export_hf(tmp_path, config, params, tokenizer=tiny_tokenizer())
  values = json.loads((tmp_path / "config.json").read_text())
  assert values["model_type"] == ("qwen2" if config.attention_bias else "llama")
  model = load_model(tmp_path)
  assert model.config == config
  assert_trees_identical(model.params, params)
  assert model.tokenizer.encode("hi<|im_end|>") == tiny_tokenizer().encode("hi<|im_end|>")
  assert model.tokenizer.chat_template == "{{ messages[0]['content'] }}"


def test_hf_tensor_layout(tmp_path):
  config = tiny_config()
  params = random_params(config)
  export_hf(tmp_path, config, params)
  tensors = load_file(str(tmp_path / "model.safetensors"))
  assert np.array_equal(tensors["model.layers.1.self_attn.q_proj.weight"],
                        np.asarray(params["layers_1"]["attn"]["q_proj"]["kernel"]).T)
  assert np.array_equal(tensors["lm_head.weight"], np.asarray(params["lm_head"]["kernel"]).T)
  assert tensors["model.layers.0.post_attention_layernorm.weight"].shape == (config.hidden_size,)
  assert not (tmp_path / "tokenizer.json").exists()
  assert load_model(tmp_path).tokenizer is None


def test_sharded_index_and_streaming(tmp_path, monkeypatch):
  config = tiny_config()
  params = random_params(config)
  export_hf(tmp_path, config, params)
  tensors = load_file(str(tmp_path / "model.safetensors"))
  (tmp_path / "model.safetensors").unlink()
  names = sorted(tensors)
  shards = {"model-00001-of-00002.safetensors": names[::2],
            "model-00002-of-00002.safetensors": names[1::2]}
  weight_map = {}
  for file, keys in shards.items():
    save_file({k: tensors[k] for k in keys}, str(tmp_path / file), metadata={"format": "pt"})
    weight_map.update({k: file for k in keys})
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  assert_trees_identical(load_model(tmp_path).params, params)

  reader = open_model(tmp_path)
  read = []
  original = type(reader)._read_array
  monkeypatch.setattr(type(reader), "_read_array",
                      lambda self, spec: read.append(spec.name) or original(self, spec))
  layer = reader.read_layer(1)
  assert list(layer) == ["layers_1"] and all(n.startswith("model.layers.1.") for n in read)
  assert set(reader.read_globals()) == {"embed", "final_norm", "lm_head"}


def test_bf16_and_f16_tensors(tmp_path):
  config = tiny_config()
  export_hf(tmp_path, config, random_params(config))
  tensors = load_file(str(tmp_path / "model.safetensors"))
  low = {k: v.astype(ml_dtypes.bfloat16 if i % 2 else np.float16)
         for i, (k, v) in enumerate(sorted(tensors.items()))}
  save_file(low, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
  params = load_model(tmp_path).params
  expected = low["model.layers.0.mlp.up_proj.weight"].astype(np.float32).T
  assert np.array_equal(np.asarray(params["layers_0"]["mlp"]["up_proj"]["kernel"]), expected)
  assert {np.asarray(x).dtype for x in jax.tree.leaves(params)} == {np.dtype(np.float32)}


@flax.struct.dataclass
class DenseAsCompressed:
  """Stand-in compressed leaf for export tests."""
  w: jax.Array
  shape: tuple = flax.struct.field(pytree_node=False)

  def matmul(self, x):
    return x @ self.w

  def materialize(self):
    return self.w


def test_compressed_leaves_refused_or_materialized(tmp_path):
  config = tiny_config()
  params = random_params(config)
  dense = params["layers_0"]["mlp"]["up_proj"]["kernel"]
  params["layers_0"]["mlp"]["up_proj"]["kernel"] = DenseAsCompressed(dense, dense.shape)
  with pytest.raises(ValueError, match=r"\['layers_0'\]\['mlp'\]\['up_proj'\]\['kernel'\] is a "
                     "compressed leaf.*materialize=True"):
    export_hf(tmp_path / "a", config, params)
  export_hf(tmp_path / "b", config, params, materialize=True)
  assert np.array_equal(load_model(tmp_path / "b").params["layers_0"]["mlp"]["up_proj"]["kernel"],
                        dense)


def _edit_config(directory, **changes):
  path = directory / "config.json"
  values = json.loads(path.read_text())
  values.update(changes)
  path.write_text(json.dumps(values))


def test_errors(tmp_path):
  with pytest.raises(CheckpointFormatError, match="missing_dir: no such file or directory"):
    load_model(tmp_path / "missing_dir")
  config = tiny_config()
  export_hf(tmp_path, config, random_params(config))

  _edit_config(tmp_path, head_dim=4)
  with pytest.raises(CheckpointFormatError, match=r"model.layers.0.self_attn.q_proj.weight has "
                     r"shape \(32, 32\), expected \(16, 32\)"):
    open_model(tmp_path)
  _edit_config(tmp_path, head_dim=8, hidden_size=48)
  with pytest.raises(CheckpointFormatError,
                     match=r"model.embed_tokens.weight has shape \(96, 32\), expected \(96, 48\)"):
    open_model(tmp_path)
  _edit_config(tmp_path, hidden_size=32, model_type="bert")
  with pytest.raises(CheckpointFormatError, match="config.json: unsupported model_type='bert'"):
    open_model(tmp_path)
  _edit_config(tmp_path, model_type="llama", rope_scaling={"rope_type": "llama3", "factor": 8.0})
  with pytest.raises(CheckpointFormatError, match="rope_scaling.*not supported"):
    open_model(tmp_path)
  _edit_config(tmp_path, rope_scaling=None)
  assert open_model(tmp_path).config == config

  weights = tmp_path / "model.safetensors"
  tensors = load_file(str(weights))
  save_file({k: v for k, v in tensors.items() if k != "model.layers.1.mlp.up_proj.weight"},
            str(weights))
  with pytest.raises(CheckpointFormatError,
                     match="missing tensor model.layers.1.mlp.up_proj.weight"):
    open_model(tmp_path)
  save_file(dict(tensors, **{"model.norm.weight": np.zeros(32, np.int32)}), str(weights))
  with pytest.raises(CheckpointFormatError, match="model.norm.weight has unsupported dtype int32"):
    load_model(tmp_path)
  save_file(tensors, str(weights))
  weights.write_bytes(weights.read_bytes()[:1000])
  with pytest.raises(CheckpointFormatError, match="model.safetensors: truncated or corrupt"):
    open_model(tmp_path)
  (tmp_path / "config.json").unlink()
  with pytest.raises(CheckpointFormatError, match="no config.json"):
    open_model(tmp_path)
