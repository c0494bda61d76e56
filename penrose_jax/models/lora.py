"""LoRA adapters as a pure params transform: dense kernels -> `LoRAKernel` leaves and back.

`add_lora(params, rank, alpha, include_regex, seed)` returns a new params tree in which every
dense `kernel` whose path matches `include_regex` is replaced by a `LoRAKernel` leaf holding the
frozen base W (in, out), A (in, r) and B (r, out); the leaf computes
x @ W + (alpha / r) * (x @ A) @ B. B starts at zero, so the model's output is unchanged at
init. The input tree is never modified.

`LoRAKernel` implements the `CompressedMatrix` protocol of models/linear.py, so the model runs it
through the ordinary `linear(w, x)` dispatch under jit and grad, and io/checkpoint.py registers
it as a leaf type (io sits above models, so the registration lives there), so `save_params` / `restore_params` (and orbax TrainState
checkpoints) keep it. Select only the adapters for training with the regex `LORA_TRAINABLE_REGEX`
(`training.trainable` joins dataclass field names into paths: 'layers_0/attn/q_proj/kernel/a').
The 'compressed' selector of training.trainable would also pick the base W (it trains every
float array inside a leaf), so do not use it for LoRA.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from penrose_jax.models.linear import is_compressed

# Every attention and MLP projection of every layer (embeddings / lm_head are left dense).
DEFAULT_INCLUDE_REGEX = r"layers_\d+/(attn|mlp)/\w+_proj/kernel$"
# Path regex for `training.trainable_mask` that selects only the adapter factors.
LORA_TRAINABLE_REGEX = r"/kernel/(a|b)$"


@struct.dataclass
class LoRAKernel:
  """A dense kernel plus a low-rank trainable update.

  Attributes:
    base: frozen (in, out) kernel W.
    a: (in, r) down projection (random init).
    b: (r, out) up projection (zero init).
    alpha: LoRA scaling numerator (static); the update is scaled by alpha / r.
  """

  base: jax.Array
  a: jax.Array
  b: jax.Array
  alpha: float = struct.field(pytree_node=False, default=16.0)

  @property
  def shape(self) -> tuple[int, int]:
    """The dense (in, out) shape."""
    return tuple(int(s) for s in self.base.shape)

  @property
  def rank(self) -> int:
    """The adapter rank r."""
    return int(self.a.shape[-1])

  @property
  def scale(self) -> float:
    """alpha / r."""
    return float(self.alpha) / self.rank

  def matmul(self, x: jax.Array) -> jax.Array:
    """Returns x @ (W + scale * A @ B) without forming A @ B.

    Args:
      x: (..., in) activations.

    Returns:
      (..., out).
    """
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    x = x.astype(dtype)
    dense = jnp.matmul(x, self.base.astype(dtype))
    update = jnp.matmul(jnp.matmul(x, self.a.astype(dtype)), self.b.astype(dtype))
    return dense + jnp.asarray(self.scale, dtype) * update

  def materialize(self) -> jax.Array:
    """Returns W + scale * A @ B as a dense (in, out) array."""
    return self.base + self.scale * jnp.matmul(self.a, self.b)

  def param_count(self) -> int:
    """Returns the number of stored numbers (base + A + B)."""
    return int(np.size(self.base) + np.size(self.a) + np.size(self.b))

  def adapter_param_count(self) -> int:
    """Returns the number of trainable adapter numbers (A + B)."""
    return int(np.size(self.a) + np.size(self.b))

  def nbytes(self) -> int:
    """Returns the bytes of the stored arrays."""
    return int(sum(np.size(x) * np.dtype(x.dtype).itemsize for x in (self.base, self.a, self.b)))

  def checkpoint_arrays(self) -> dict[str, Any]:
    """Returns the array fields for io.checkpoint.save_params."""
    return {"base": self.base, "a": self.a, "b": self.b}

  def checkpoint_meta(self) -> dict:
    """Returns the JSON-serialisable static fields."""
    return {"alpha": float(self.alpha)}

  @classmethod
  def from_checkpoint(cls, arrays: dict, meta: dict) -> "LoRAKernel":
    """Rebuilds a leaf from `checkpoint_arrays` / `checkpoint_meta` output.

    Args:
      arrays: {'base', 'a', 'b'}.
      meta: {'alpha'}.

    Returns:
      The leaf.
    """
    return cls(base=arrays["base"], a=arrays["a"], b=arrays["b"], alpha=float(meta["alpha"]))


def _map_kernels(params: Any, fn, path: tuple[str, ...] = ()) -> Any:
  """Rebuilds nested dicts (new dict objects), calling fn(path_string, leaf) on every leaf."""
  if isinstance(params, Mapping):
    return {key: _map_kernels(value, fn, path + (str(key),)) for key, value in params.items()}
  return fn("/".join(path), params)


def wrappable_kernels(params: Any, include_regex: str = DEFAULT_INCLUDE_REGEX) -> list[str]:
  """The '/'-joined paths `add_lora` would wrap: dense 2-D float kernels matching the regex.

  Args:
    params: params pytree (compressed leaves never match).
    include_regex: searched in each leaf's path.

  Returns:
    The paths, in tree order.
  """
  pattern = re.compile(include_regex)
  paths: list[str] = []

  def collect(path: str, leaf: Any) -> Any:
    if (not is_compressed(leaf) and path.endswith("kernel") and np.ndim(leaf) == 2
        and jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating) and pattern.search(path)):
      paths.append(path)
    return leaf

  _map_kernels(params, collect)
  return paths


def add_lora(params: Any, rank: int, alpha: float = 16.0,
             include_regex: str = DEFAULT_INCLUDE_REGEX, seed: int = 0) -> Any:
  """Wraps matching dense kernels in LoRAKernel leaves (pure: the input is not modified).

  Args:
    params: params pytree (nested dicts; compressed leaves are left alone).
    rank: adapter rank r (> 0).
    alpha: scaling numerator; the update is (alpha / r) * A @ B.
    include_regex: searched in each leaf's '/'-joined path; only 2-D float arrays whose last
      key is 'kernel' are wrapped.
    seed: seed for A (normal, std 1 / sqrt(in)); kernel k in path order uses
      default_rng([seed, k]), so the result does not depend on dict insertion order.

  Returns:
    A new params tree.

  Raises:
    ValueError: rank < 1 or no kernel matched.
  """
  if rank < 1:
    raise ValueError(f"add_lora: rank must be >= 1, got {rank}")
  paths = wrappable_kernels(params, include_regex)
  if not paths:
    raise ValueError(f"add_lora: no dense kernel matches {include_regex!r}")
  index = {p: k for k, p in enumerate(sorted(paths))}

  def wrap(path: str, leaf: Any) -> Any:
    if path not in index:
      return leaf
    n_in, n_out = np.shape(leaf)
    r = min(rank, n_in, n_out)
    rng = np.random.default_rng([seed, index[path]])
    a = rng.standard_normal((n_in, r)).astype(np.float32) / np.sqrt(n_in)
    dtype = jnp.asarray(leaf).dtype
    return LoRAKernel(base=leaf, a=jnp.asarray(a, dtype), b=jnp.zeros((r, n_out), dtype),
                      alpha=float(alpha))

  return _map_kernels(params, wrap)


def merge_lora(params: Any) -> Any:
  """Replaces every LoRAKernel by its dense W + scale * A @ B (pure).

  Args:
    params: params pytree possibly holding LoRAKernel leaves.

  Returns:
    A new tree with dense kernels in their place.
  """
  return _map_kernels(params, lambda path, leaf: leaf.materialize()
                      if isinstance(leaf, LoRAKernel) else leaf)


def lora_param_counts(params: Any) -> dict[str, int]:
  """Counts adapters and adapter parameters (for reports).

  Args:
    params: params pytree.

  Returns:
    {'lora_kernels', 'lora_params'}.
  """
  leaves = [leaf for leaf in jax.tree_util.tree_leaves(
      params, is_leaf=lambda x: isinstance(x, LoRAKernel)) if isinstance(leaf, LoRAKernel)]
  return {"lora_kernels": len(leaves),
          "lora_params": int(sum(leaf.adapter_param_count() for leaf in leaves))}
