"""Hugging Face checkpoint directories: streaming reader and exporter.

A directory holds config.json (LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM),
model.safetensors or a sharded model.safetensors.index.json, and optionally the tokenizer files.
Tensors are read one at a time with `safetensors.safe_open` (memory-mapped), in float32.
"""

from __future__ import annotations

import os
import pathlib
import warnings
from typing import Any, Mapping, Optional

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from penrose_jax.io.errors import CheckpointFormatError
from penrose_jax.io.json_files import read_json, write_json_atomic
from penrose_jax.io.reader_base import (ModelReader, TensorSpec, layer_param_layout,
                                        unpermute_rope_rows)
from penrose_jax.io.tokenizer import TextTokenizer
from penrose_jax.models.config import ModelConfig
from penrose_jax.models.linear import is_compressed

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
_ARCHITECTURE_CLASSES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                         "qwen2": "Qwen2ForCausalLM"}
# HF tensor name (after 'model.layers.N.') per params path inside a layer.
_LAYER_TENSORS = {
    ("attn_norm", "scale"): "input_layernorm.weight",
    ("mlp_norm", "scale"): "post_attention_layernorm.weight",
    ("attn", "q_proj", "kernel"): "self_attn.q_proj.weight",
    ("attn", "k_proj", "kernel"): "self_attn.k_proj.weight",
    ("attn", "v_proj", "kernel"): "self_attn.v_proj.weight",
    ("attn", "o_proj", "kernel"): "self_attn.o_proj.weight",
    ("attn", "q_proj", "bias"): "self_attn.q_proj.bias",
    ("attn", "k_proj", "bias"): "self_attn.k_proj.bias",
    ("attn", "v_proj", "bias"): "self_attn.v_proj.bias",
    ("mlp", "gate_proj", "kernel"): "mlp.gate_proj.weight",
    ("mlp", "up_proj", "kernel"): "mlp.up_proj.weight",
    ("mlp", "down_proj", "kernel"): "mlp.down_proj.weight",
}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def _first_id(value: Any) -> int:
  if isinstance(value, (list, tuple)):
    value = value[0] if value else None
  return -1 if value is None else int(value)


def config_from_hf_dict(values: Mapping[str, Any], source: str = "config.json",
                        tensor_names: Optional[set[str]] = None) -> ModelConfig:
  """Builds a ModelConfig from a Hugging Face config.json dict.

  Args:
    values: the decoded config.json.
    source: file name used in error messages.
    tensor_names: the checkpoint's tensor names, used to detect q/k/v biases of Llama models.

  Returns:
    The ModelConfig.
  """
  model_type = values.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise CheckpointFormatError(f"{source}: unsupported model_type={model_type!r} "
                                f"(supported: {list(SUPPORTED_MODEL_TYPES)})")
  act = values.get("hidden_act", "silu")
  if act not in ("silu", "swish"):
    raise CheckpointFormatError(f"{source}: hidden_act={act!r} is not supported (only silu)")
  scaling = values.get("rope_scaling")
  if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
    raise CheckpointFormatError(f"{source}: rope_scaling={scaling} is not supported by "
                                "penrose_jax.models")
  if values.get("partial_rotary_factor", 1.0) != 1.0 or values.get("mlp_bias"):
    raise CheckpointFormatError(f"{source}: partial_rotary_factor / mlp_bias are not supported")
  if model_type == "mistral" and values.get("sliding_window"):
    warnings.warn(f"{source}: sliding_window={values['sliding_window']} is ignored "
                  "(full attention is used)")
  tensor_names = tensor_names or set()
  if "model.layers.0.self_attn.o_proj.bias" in tensor_names:
    raise CheckpointFormatError(f"{source}: o_proj biases are not supported")
  required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads")
  for key in required:
    if values.get(key) is None:
      raise CheckpointFormatError(f"{source}: missing field {key}")
  heads = int(values["num_attention_heads"])
  attention_bias = (model_type == "qwen2" or bool(values.get("attention_bias"))
                    or "model.layers.0.self_attn.q_proj.bias" in tensor_names)
  try:
    return ModelConfig(
        vocab_size=int(values["vocab_size"]), hidden_size=int(values["hidden_size"]),
        intermediate_size=int(values["intermediate_size"]),
        num_layers=int(values["num_hidden_layers"]), num_heads=heads,
        num_kv_heads=int(values.get("num_key_value_heads") or heads),
        head_dim=int(values.get("head_dim") or int(values["hidden_size"]) // heads),
        rope_theta=float(values.get("rope_theta", 10000.0)),
        rms_norm_eps=float(values.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(values.get("tie_word_embeddings", False)),
        attention_bias=attention_bias,
        max_position=int(values.get("max_position_embeddings", 2048)),
        bos_token_id=_first_id(values.get("bos_token_id")),
        eos_token_id=_first_id(values.get("eos_token_id")),
        name=str(values.get("_name_or_path") or model_type))
  except ValueError as err:
    raise CheckpointFormatError(f"{source}: inconsistent config ({err})") from err


def hf_config_dict(config: ModelConfig) -> dict[str, Any]:
  """Returns the config.json dict for a ModelConfig (Qwen2 when it has q/k/v biases).

  Args:
    config: the model config (its rope_interleaved flag is not written: exports are HF order).

  Returns:
    The dict.
  """
  model_type = "qwen2" if config.attention_bias else "llama"
  values: dict[str, Any] = {
      "architectures": [_ARCHITECTURE_CLASSES[model_type]], "model_type": model_type,
      "_name_or_path": config.name, "vocab_size": config.vocab_size,
      "hidden_size": config.hidden_size, "intermediate_size": config.intermediate_size,
      "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
      "num_key_value_heads": config.num_kv_heads, "head_dim": config.head_dim,
      "hidden_act": "silu", "rope_theta": config.rope_theta, "rope_scaling": None,
      "rms_norm_eps": config.rms_norm_eps, "tie_word_embeddings": config.tie_embeddings,
      "max_position_embeddings": config.max_position, "torch_dtype": "float32",
      "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True}
  if model_type == "llama":
    values.update(attention_bias=False, mlp_bias=False)
  for key in ("bos_token_id", "eos_token_id"):
    if getattr(config, key) >= 0:
      values[key] = getattr(config, key)
  return values


def _global_specs(config: ModelConfig) -> list[TensorSpec]:
  specs = [TensorSpec("model.embed_tokens.weight", ("embed", "embedding"),
                      (config.vocab_size, config.hidden_size)),
           TensorSpec("model.norm.weight", ("final_norm", "scale"), (config.hidden_size,))]
  if not config.tie_embeddings:
    specs.append(TensorSpec("lm_head.weight", ("lm_head", "kernel"),
                            (config.vocab_size, config.hidden_size), transpose=True))
  return specs


def _layer_specs(config: ModelConfig, index: int) -> list[TensorSpec]:
  return [TensorSpec(f"model.layers.{index}.{_LAYER_TENSORS[path]}", (f"layers_{index}",) + path,
                     shape, transpose=is_kernel)
          for path, shape, is_kernel in layer_param_layout(config)]


class HFModelReader(ModelReader):
  """ModelReader over a Hugging Face safetensors directory (see module docstring)."""

  def __init__(self, path: str | os.PathLike, tokenizer: Optional[TextTokenizer] = None):
    """Reads config.json, the safetensors headers and the tokenizer; no tensor data is read.

    Args:
      path: the directory.
      tokenizer: use this tokenizer instead of the directory's tokenizer.json.
    """
    self.path = pathlib.Path(path)
    if not self.path.is_dir():
      raise CheckpointFormatError(f"{self.path}: model directory not found")
    config_path = self.path / "config.json"
    values = read_json(config_path)
    if values is None:
      raise CheckpointFormatError(f"{config_path}: file not found")
    self._files = self._tensor_files()
    self._shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(set(self._files.values())):
      with self._open(file) as f:
        for name in f.keys():
          self._shapes[name] = tuple(f.get_slice(name).get_shape())
    for name, file in self._files.items():
      if name not in self._shapes:
        raise CheckpointFormatError(f"{file}: missing tensor {name} (listed in {INDEX_FILE})")
    self.config = config_from_hf_dict(values, str(config_path), set(self._shapes))
    if tokenizer is None and (self.path / "tokenizer.json").is_file():
      tokenizer = TextTokenizer.from_directory(self.path, self.config.bos_token_id,
                                               self.config.eos_token_id)
    self.tokenizer = tokenizer
    self.check_tensors()

  def _tensor_files(self) -> dict[str, pathlib.Path]:
    index_path = self.path / INDEX_FILE
    index = read_json(index_path)
    if index is not None:
      weight_map = index.get("weight_map") if isinstance(index, dict) else None
      if not isinstance(weight_map, dict):
        raise CheckpointFormatError(f"{index_path}: no 'weight_map' object")
      return {name: self.path / file for name, file in weight_map.items()}
    single = self.path / SINGLE_FILE
    if not single.is_file():
      raise CheckpointFormatError(f"{self.path}: neither {SINGLE_FILE} nor {INDEX_FILE} found")
    with self._open(single) as f:
      return {name: single for name in f.keys()}

  def _open(self, file: pathlib.Path):
    if not file.is_file():
      raise CheckpointFormatError(f"{file}: safetensors file not found")
    try:
      return safe_open(str(file), framework="numpy")
    except Exception as err:  # safetensors raises SafetensorError on bad headers/sizes.
      raise CheckpointFormatError(f"{file}: truncated or corrupt safetensors file ({err})") from err

  def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
    """Returns tensor name -> shape as stored ((out, in) for weights)."""
    return dict(self._shapes)

  def global_specs(self) -> list[TensorSpec]:
    """Returns the specs of the embedding, final norm and untied LM head."""
    return _global_specs(self.config)

  def layer_specs(self, index: int) -> list[TensorSpec]:
    """Returns the specs of decoder layer `index`."""
    return _layer_specs(self.config, index)

  def _read_array(self, spec: TensorSpec) -> np.ndarray:
    file = self._files.get(spec.name)
    if file is None:
      raise CheckpointFormatError(f"{self.path}: missing tensor {spec.name}")
    with self._open(file) as f:
      try:
        array = f.get_tensor(spec.name)
      except Exception as err:
        raise CheckpointFormatError(f"{file}: cannot read tensor {spec.name} ({err})") from err
    if array.dtype.kind in "iub":  # bfloat16/float8 (ml_dtypes) have kind 'V' and convert.
      raise CheckpointFormatError(f"{file}: tensor {spec.name} has unsupported dtype "
                                  f"{array.dtype}")
    return array.astype(np.float32)


def _leaf(params: Mapping[str, Any], path: tuple[str, ...], materialize: bool) -> np.ndarray:
  node: Any = params
  where = "params"
  for key in path:
    where += f"[{key!r}]"
    if not isinstance(node, Mapping) or key not in node:
      raise KeyError(f"export_hf: {where} is missing")
    node = node[key]
  if is_compressed(node):
    if not materialize:
      raise ValueError(f"export_hf: {where} is a compressed leaf ({type(node).__name__}); "
                       "HF checkpoints hold dense weights only. Pass materialize=True to write "
                       "its dense matrix.")
    node = node.materialize()
  return np.asarray(node, dtype=np.float32)


def export_hf(directory: str | os.PathLike, config: ModelConfig, params: Mapping[str, Any],
              tokenizer: Optional[TextTokenizer] = None, materialize: bool = False) -> pathlib.Path:
  """Writes params as a Hugging Face directory that `load_model` reads back bit-identically.

  Writes config.json, generation_config.json, model.safetensors (float32) and, when given, the
  tokenizer files. Each file is written to a temp name and renamed.

  Args:
    directory: target directory (created if needed).
    config: the model config.
    params: the params pytree (see docs/CONTRACTS_DEV.md).
    tokenizer: tokenizer to save alongside.
    materialize: write compressed leaves as their dense matrices instead of refusing them.

  Returns:
    The directory path.
  """
  directory = pathlib.Path(directory)
  tensors: dict[str, np.ndarray] = {}
  specs = _global_specs(config)
  for index in range(config.num_layers):
    specs.extend(_layer_specs(config, index))
  for spec in specs:
    array = _leaf(params, spec.path, materialize)
    if spec.transpose:
      array = array.T
    if tuple(array.shape) != spec.file_shape:
      raise ValueError(f"export_hf: params{list(spec.path)} gives {spec.name} of shape "
                       f"{tuple(array.shape)}, expected {spec.file_shape} from the config")
    if config.rope_interleaved and spec.path[-2] in ("q_proj", "k_proj"):
      heads = config.num_heads if spec.path[-2] == "q_proj" else config.num_kv_heads
      array = unpermute_rope_rows(array, heads)
    tensors[spec.name] = np.ascontiguousarray(array)
  directory.mkdir(parents=True, exist_ok=True)
  tmp = directory / f".{SINGLE_FILE}.tmp-{os.getpid()}"
  try:
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, directory / SINGLE_FILE)
    (directory / INDEX_FILE).unlink(missing_ok=True)  # a stale index would shadow the new file
  finally:
    if tmp.exists():
      tmp.unlink()
  write_json_atomic(directory / "config.json", hf_config_dict(config))
  generation = {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id}
  if tokenizer is not None and tokenizer.stop_token_ids:
    generation["eos_token_id"] = list(tokenizer.stop_token_ids)
  write_json_atomic(directory / "generation_config.json",
                    {k: v for k, v in generation.items() if v not in (-1, [])})
  if tokenizer is not None:
    tokenizer.save(directory)
  return directory
