"""The streaming `ModelReader` interface and the expected parameter layout it fills.

Readers for each on-disk format (GGUF in `gguf_reader`, Hugging Face safetensors directories in
`hf_checkpoint`) subclass `ModelReader`. They describe each parameter with a `TensorSpec`
(file tensor name, params path, and how to turn the file array into the params leaf), so the
shape checks and error messages are shared.
"""

from __future__ import annotations

import abc
import dataclasses
import pathlib
from typing import Any, Optional

import jax
import numpy as np

from penrose_jax.io.errors import CheckpointFormatError
from penrose_jax.models.config import ModelConfig

# Every dense weight in a file is stored (out, in); kernels in params are (in, out).
_LAYER_KERNELS = {
    ("attn", "q_proj"): lambda c: (c.num_heads * c.head_dim, c.hidden_size),
    ("attn", "k_proj"): lambda c: (c.num_kv_heads * c.head_dim, c.hidden_size),
    ("attn", "v_proj"): lambda c: (c.num_kv_heads * c.head_dim, c.hidden_size),
    ("attn", "o_proj"): lambda c: (c.hidden_size, c.num_heads * c.head_dim),
    ("mlp", "gate_proj"): lambda c: (c.intermediate_size, c.hidden_size),
    ("mlp", "up_proj"): lambda c: (c.intermediate_size, c.hidden_size),
    ("mlp", "down_proj"): lambda c: (c.hidden_size, c.intermediate_size),
}
LAYER_NORMS = ("attn_norm", "mlp_norm")
BIASED_PROJECTIONS = ("q_proj", "k_proj", "v_proj")


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """One parameter as stored in a file.

  Attributes:
    name: tensor name inside the file.
    path: key path of the leaf inside the params pytree, e.g. ('attn', 'q_proj', 'kernel').
    file_shape: shape the tensor must have in the file ((out, in) for dense weights).
    transpose: whether the file array is transposed to give the params leaf.
    rope_heads: for q/k weights and biases stored in llama.cpp's interleaved order, the number
      of heads to un-permute over; 0 when the file is already in HF rotate-half order.
  """

  name: str
  path: tuple[str, ...]
  file_shape: tuple[int, ...]
  transpose: bool = False
  rope_heads: int = 0


def layer_param_layout(config: ModelConfig) -> list[tuple[tuple[str, ...], tuple[int, ...], bool]]:
  """Lists every leaf of one decoder layer with its file-convention shape.

  Args:
    config: the model config.

  Returns:
    (params path, file shape, is_kernel) triples; kernels are (out, in) in files.
  """
  layout = [(("attn_norm", "scale"), (config.hidden_size,), False),
            (("mlp_norm", "scale"), (config.hidden_size,), False)]
  for (block, proj), shape_fn in _LAYER_KERNELS.items():
    shape = shape_fn(config)
    layout.append(((block, proj, "kernel"), shape, True))
    if config.attention_bias and proj in BIASED_PROJECTIONS:
      layout.append(((block, proj, "bias"), (shape[0],), False))
  return layout


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Undoes llama.cpp's q/k row permutation (interleaved RoPE -> HF rotate-half order).

  llama.cpp's convert script stores `w.reshape(n, 2, d // n // 2, *rest).swapaxes(1, 2)`; this
  is its inverse. Works on (out, in) weights and (out,) biases.

  Args:
    w: array whose first axis holds n_heads * head_dim rows.
    n_heads: heads the rows are grouped into.

  Returns:
    The array with rows in HF order.
  """
  rows = w.shape[0]
  return (w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2)
          .reshape(w.shape))


def permute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Applies llama.cpp's q/k row permutation (HF rotate-half -> interleaved RoPE order).

  Args:
    w: array whose first axis holds n_heads * head_dim rows.
    n_heads: heads the rows are grouped into.

  Returns:
    The array with rows in llama.cpp's order.
  """
  rows = w.shape[0]
  return (w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2)
          .reshape(w.shape))


def set_path(tree: dict, path: tuple[str, ...], value: Any) -> None:
  """Stores `value` at `path` inside nested dicts, creating them as needed."""
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


class ModelReader(abc.ABC):
  """Streams a model's params one decoder layer at a time.

  Attributes:
    path: the file or directory being read.
    config: the ModelConfig read from the file's metadata.
    tokenizer: the TextTokenizer stored with the model (None if the directory has none).
  """

  path: pathlib.Path
  config: ModelConfig
  tokenizer: Optional[Any]

  @property
  def num_layers(self) -> int:
    """Number of decoder layers."""
    return self.config.num_layers

  @abc.abstractmethod
  def global_specs(self) -> list[TensorSpec]:
    """Returns the specs of the non-layer tensors (embedding, final norm, LM head)."""

  @abc.abstractmethod
  def layer_specs(self, index: int) -> list[TensorSpec]:
    """Returns the specs of decoder layer `index`."""

  @abc.abstractmethod
  def _read_array(self, spec: TensorSpec) -> np.ndarray:
    """Returns the tensor named `spec.name` as a float32 numpy array in file layout."""

  def _read_tree(self, specs: list[TensorSpec]) -> dict:
    tree: dict = {}
    for spec in specs:
      array = np.asarray(self._read_array(spec), dtype=np.float32)
      if tuple(array.shape) != tuple(spec.file_shape):
        raise CheckpointFormatError(f"{self.path}: tensor {spec.name} has shape "
                                    f"{tuple(array.shape)}, expected {tuple(spec.file_shape)}")
      if spec.rope_heads:
        array = unpermute_rope_rows(array, spec.rope_heads)
      if spec.transpose:
        array = array.T
      set_path(tree, spec.path, jax.device_put(np.ascontiguousarray(array)))
    return tree

  def read_globals(self) -> dict:
    """Reads the embedding, final norm and (when untied) LM head.

    Returns:
      {'embed': ..., 'final_norm': ..., ['lm_head': ...]} with float32 jax arrays.
    """
    return self._read_tree(self.global_specs())

  def read_layer(self, index: int) -> dict:
    """Reads one decoder layer without touching the others.

    Args:
      index: layer number in [0, num_layers).

    Returns:
      The 'layers_{index}' subtree with float32 jax arrays (kernels (in, out), HF RoPE order).
    """
    if not 0 <= index < self.num_layers:
      raise IndexError(f"{self.path}: layer {index} out of range [0, {self.num_layers})")
    return self._read_tree(self.layer_specs(index))

  def check_tensors(self) -> None:
    """Checks that every expected tensor exists with the expected shape, reading no data.

    Raises:
      CheckpointFormatError: naming the first missing or mis-shaped tensor.
    """
    specs = self.global_specs()
    for index in range(self.num_layers):
      specs.extend(self.layer_specs(index))
    shapes = self.tensor_shapes()
    for spec in specs:
      if spec.name not in shapes:
        raise CheckpointFormatError(f"{self.path}: missing tensor {spec.name}")
      if tuple(shapes[spec.name]) != tuple(spec.file_shape):
        raise CheckpointFormatError(
            f"{self.path}: tensor {spec.name} has shape {tuple(shapes[spec.name])}, "
            f"expected {tuple(spec.file_shape)}")

  @abc.abstractmethod
  def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
    """Returns every tensor name in the file with its (out, in)-convention shape."""

  def close(self) -> None:
    """Releases file handles (a no-op unless a reader holds some)."""

  def __enter__(self) -> "ModelReader":
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()
