"""On-disk cache of teacher activations for a fixed calibration set of token windows.

What is stored (per window, as .npy files memory-mapped on read):
  - `hidden.npy`: (N, K, T, D) hidden states of the K selected layers (the layers the
    alignment objective uses), in the cache dtype;
  - `final_hidden.npy`: (N, T, D) the final-norm output;
  - `tokens.npy`: (N, T) the windows themselves (checked on use).
Logits are *not* stored: (N, T, V) is ~V/D times larger than one hidden layer (85x for a 49k
vocabulary at D=576); they are recomputed from `final_hidden` with the teacher's LM head, one
matmul, so the loss needs only the head params as teacher constants.

Disk/memory: N * T * D * (K + 1) * itemsize bytes; e.g. 256 windows x 512 tokens at D=576 is
302 MB per layer in float32 (151 MB in float16), so cache a few layers (e.g. every 4th + last)
rather than all of them. Only the rows of the current batch are read into memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from penrose_jax.models import llama
from penrose_jax.models.config import ModelConfig
from penrose_jax.models.linear import linear

_MANIFEST = "manifest.json"


def tokens_fingerprint(tokens: np.ndarray) -> str:
  """sha256 of the int32 token array (identifies the windows a cache was built from).

  Args:
    tokens: (N, T) ids.

  Returns:
    Hex digest.
  """
  return hashlib.sha256(np.ascontiguousarray(tokens, np.int32).tobytes()).hexdigest()


def teacher_head_params(teacher_params: Any, config: ModelConfig) -> dict:
  """The subtree needed to turn final hidden states into logits.

  Args:
    teacher_params: full teacher params.
    config: the architecture.

  Returns:
    {'embed': ...} when embeddings are tied, else {'lm_head': ...}.
  """
  if config.tie_embeddings:
    return {"embed": teacher_params["embed"]}
  return {"lm_head": teacher_params["lm_head"]}


def logits_from_final_hidden(head_params: dict, final_hidden: jax.Array,
                             config: ModelConfig) -> jax.Array:
  """Applies the LM head (what `llama.forward` does after the final norm).

  Args:
    head_params: output of `teacher_head_params`.
    final_hidden: (B, T, D) final-norm output.
    config: the architecture.

  Returns:
    (B, T, V) float32 logits.
  """
  if config.tie_embeddings:
    emb = jnp.asarray(head_params["embed"]["embedding"])
    return (final_hidden @ emb.T.astype(final_hidden.dtype)).astype(jnp.float32)
  return linear(head_params["lm_head"]["kernel"], final_hidden).astype(jnp.float32)


@dataclasses.dataclass
class TeacherCache:
  """Memory-mapped cached teacher activations.

  Attributes:
    directory: cache folder.
    layers: the cached layer indices (as given, negative allowed).
    hidden: (N, K, T, D) memmap.
    final_hidden: (N, T, D) memmap.
    tokens: (N, T) memmap.
  """

  directory: str
  layers: tuple[int, ...]
  hidden: np.ndarray
  final_hidden: np.ndarray
  tokens: np.ndarray

  def batch(self, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Cached arrays for some windows, in the layout the alignment loss reads.

    Args:
      rows: window indices.

    Returns:
      {'teacher_hidden': (K, B, T, D) float32, 'teacher_final_hidden': (B, T, D) float32}.
    """
    rows = np.asarray(rows)
    hidden = np.asarray(self.hidden[rows], np.float32).transpose(1, 0, 2, 3)
    return {"teacher_hidden": hidden,
            "teacher_final_hidden": np.asarray(self.final_hidden[rows], np.float32)}


def cache_teacher_outputs(teacher_params: Any, config: ModelConfig, token_windows: np.ndarray,
                          directory: str, layers: Optional[Sequence[int]] = None,
                          batch_size: int = 8, dtype: str = "float32") -> TeacherCache:
  """Runs the teacher over windows and writes its activations (reuses a matching cache).

  Args:
    teacher_params: dense teacher params.
    config: the architecture.
    token_windows: (N, T) int token windows.
    directory: cache folder (created).
    layers: layer indices to keep; None = all layers (large, see module docstring).
    batch_size: windows per teacher forward.
    dtype: storage dtype, 'float32' or 'float16'.

  Returns:
    The TeacherCache (memory-mapped).
  """
  tokens = np.asarray(token_windows, np.int32)
  layers = tuple(range(config.num_layers)) if layers is None else tuple(int(l) for l in layers)
  manifest = {"layers": list(layers), "num_windows": int(tokens.shape[0]),
              "window_length": int(tokens.shape[1]), "hidden_size": config.hidden_size,
              "dtype": dtype, "tokens_sha256": tokens_fingerprint(tokens)}
  manifest_path = os.path.join(directory, _MANIFEST)
  if os.path.exists(manifest_path):
    with open(manifest_path, encoding="utf-8") as f:
      if json.load(f) == manifest:
        return load_teacher_cache(directory)
  os.makedirs(directory, exist_ok=True)
  n, t = tokens.shape
  hidden = np.lib.format.open_memmap(os.path.join(directory, "hidden.npy"), mode="w+",
                                     dtype=dtype, shape=(n, len(layers), t, config.hidden_size))
  final = np.lib.format.open_memmap(os.path.join(directory, "final_hidden.npy"), mode="w+",
                                    dtype=dtype, shape=(n, t, config.hidden_size))
  layer_index = jnp.asarray(layers, jnp.int32)

  @jax.jit
  def run(params, batch_tokens):
    out = llama.forward(params, batch_tokens, config, return_hidden=True)
    return jnp.swapaxes(out.hidden_states[layer_index], 0, 1), out.final_hidden

  for start in range(0, n, batch_size):
    chunk = tokens[start:start + batch_size]
    real = chunk.shape[0]
    if real < batch_size:  # pad to one shape: one compile
      chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - real, axis=0)])
    h, fh = jax.device_get(run(teacher_params, jnp.asarray(chunk)))
    hidden[start:start + real] = h[:real].astype(dtype)
    final[start:start + real] = fh[:real].astype(dtype)
  hidden.flush()
  final.flush()
  np.save(os.path.join(directory, "tokens.npy"), tokens)
  with open(manifest_path, "w", encoding="utf-8") as f:  # written last: marks a complete cache
    json.dump(manifest, f, indent=1)
  return load_teacher_cache(directory)


def load_teacher_cache(directory: str) -> TeacherCache:
  """Opens a cache written by `cache_teacher_outputs`.

  Args:
    directory: cache folder.

  Returns:
    TeacherCache with memory-mapped arrays.
  """
  with open(os.path.join(directory, _MANIFEST), encoding="utf-8") as f:
    manifest = json.load(f)
  load = lambda name: np.load(os.path.join(directory, name), mmap_mode="r")
  return TeacherCache(directory=directory, layers=tuple(manifest["layers"]),
                      hidden=load("hidden.npy"), final_hidden=load("final_hidden.npy"),
                      tokens=load("tokens.npy"))
