"""Training view of compressed leaves: every float array of a leaf packed into one vector.

A globally budgeted compression gives nearly every tile its own rank, so a TiledLowRank leaf
holds one (u, v) pair per distinct (h, w, rank): SmolLM2-135M at param_ratio 0.6 has ~3,400
arrays. Training such a tree puts ~25 optimizer ops on each array, and XLA's CPU compile time
grows faster than linearly with the op count: the alignment train step took 500 s to compile
(the loss gradient alone: 35 s). Packing each leaf's float arrays into one flat vector brings
the optimizer back to one array per matrix (as for a dense model); the leaf is rebuilt from
static slices of the vector inside the step, so gradients still reach every stored value.

`pack_compressed` / `unpack_compressed` are pure transforms and exact inverses. A packed leaf
implements the CompressedMatrix protocol (it delegates to the rebuilt leaf), so the model, the
loss and evaluation accept packed trees unchanged; checkpoints of a training state hold the
packed vectors (restore targets are packed the same deterministic way).
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from penrose_jax.models.linear import is_compressed, map_selected_leaves


def _is_float(x: Any) -> bool:
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jnp.issubdtype(dtype, jnp.inexact)


@struct.dataclass
class PackedLeaf:
  """A compressed leaf whose float arrays live in one flat vector.

  Attributes:
    flat: (N,) the float arrays of the leaf, raveled and concatenated in tree order.
    others: the leaf's non-float arrays (e.g. int8 quantized values), in tree order.
    treedef: static tree structure of the original leaf.
    layout: static per-leaf (is_float, shape, offset) in tree order.
  """

  flat: jax.Array
  others: tuple
  treedef: Any = struct.field(pytree_node=False)
  layout: tuple = struct.field(pytree_node=False)

  def unpack(self) -> Any:
    """Returns the original compressed leaf (float arrays as slices of `flat`)."""
    return self.rebuild(lambda start, stop, shape:
                        jax.lax.slice_in_dim(self.flat, start, stop).reshape(shape))

  def rebuild(self, take: Any) -> Any:
    """The original leaf with each float array given by `take(start, stop, shape)`.

    Args:
      take: returns the float array stored at flat[start:stop] with this shape.

    Returns:
      The compressed leaf.
    """
    leaves, others = [], iter(self.others)
    for is_float, shape, offset in self.layout:
      if is_float:
        leaves.append(take(offset, offset + int(np.prod(shape, dtype=np.int64)), shape))
      else:
        leaves.append(next(others))
    return jax.tree_util.tree_unflatten(self.treedef, leaves)

  @property
  def shape(self) -> tuple[int, int]:
    return self.unpack().shape

  def matmul(self, x: jax.Array) -> jax.Array:
    return self.unpack().matmul(x)

  def materialize(self) -> jax.Array:
    return self.unpack().materialize()

  def param_count(self) -> int:
    return self.unpack().param_count()

  def nbytes(self) -> int:
    return self.unpack().nbytes()


def _host_readable(arrays: list) -> bool:
  """True when every array is concrete and fully on this process (not a tracer)."""
  return all(isinstance(a, np.ndarray) or (isinstance(a, jax.Array)
                                           and not isinstance(a, jax.core.Tracer)
                                           and a.is_fully_addressable) for a in arrays)


def _replicated_like(value: np.ndarray, like: Any) -> jax.Array:
  """`value` on the same mesh as `like`, replicated (the flat vector has no natural split)."""
  sharding = getattr(like, "sharding", None)
  if isinstance(sharding, jax.sharding.NamedSharding):
    return jax.device_put(value, jax.sharding.NamedSharding(sharding.mesh,
                                                            jax.sharding.PartitionSpec()))
  return jax.device_put(value)


def _concatenate(floats: list) -> jax.Array:
  # Concrete single-process arrays are joined on the host: eagerly on device, each leaf's
  # concatenate compiled its own program (39 s for SmolLM2's 210 matrices).
  if _host_readable(floats):
    return _replicated_like(np.concatenate([np.ravel(np.asarray(a)) for a in floats]), floats[0])
  return jnp.concatenate([jnp.ravel(a) for a in floats])


def pack_leaf(leaf: Any) -> Optional[PackedLeaf]:
  """Packs one compressed leaf; None when its float arrays do not share one dtype.

  Args:
    leaf: a compressed leaf (TiledLowRank, SpectralMatrix, QuantizedDense, ...).

  Returns:
    The PackedLeaf, or None (mixed float dtypes or no float arrays: left as it is).
  """
  leaves, treedef = jax.tree_util.tree_flatten(leaf)
  floats = [a for a in leaves if _is_float(a)]
  if not floats or len({jnp.dtype(a.dtype) for a in floats}) != 1:
    return None
  layout, offset = [], 0
  for a in leaves:
    if _is_float(a):
      layout.append((True, tuple(int(s) for s in a.shape), offset))
      offset += int(np.prod(a.shape, dtype=np.int64))
    else:
      layout.append((False, tuple(int(s) for s in np.shape(a)), -1))
  flat = _concatenate(floats)
  others = tuple(a for a in leaves if not _is_float(a))
  return PackedLeaf(flat, others, treedef, tuple(layout))


def pack_compressed(params: Any, mask: Optional[Any] = None) -> tuple[Any, Optional[Any]]:
  """Replaces compressed leaves by PackedLeaf (pure: the input tree is not changed).

  Args:
    params: params pytree.
    mask: optional trainable mask with the structure of `params` (see
      training.trainable.trainable_mask). A leaf whose float arrays are not all trained or
      all frozen is left unpacked, so the mask keeps its meaning exactly.

  Returns:
    (packed params, packed mask or None).
  """
  leaves, treedef = jax.tree_util.tree_flatten(params, is_leaf=is_compressed)
  leaf_masks = [None] * len(leaves) if mask is None else treedef.flatten_up_to(mask)
  out_params, out_masks = [], []
  for leaf, leaf_mask in zip(leaves, leaf_masks):
    packed, flag = None, None
    if is_compressed(leaf) and not isinstance(leaf, PackedLeaf):
      if mask is not None:
        bits = {bool(b) for a, b in zip(jax.tree_util.tree_leaves(leaf),
                                        jax.tree_util.tree_leaves(leaf_mask)) if _is_float(a)}
        flag = bits.pop() if len(bits) == 1 else None
      if mask is None or flag is not None:
        packed = pack_leaf(leaf)
    if packed is None:
      out_params.append(leaf)
      out_masks.append(leaf_mask)
    else:
      out_params.append(packed)
      out_masks.append(packed.replace(flat=flag, others=tuple(False for _ in packed.others)))
  packed_params = jax.tree_util.tree_unflatten(treedef, out_params)
  if mask is None:
    return packed_params, None
  return packed_params, jax.tree_util.tree_unflatten(treedef, out_masks)


def unpack_compressed(params: Any) -> Any:
  """Inverse of `pack_compressed`: every PackedLeaf back to its original leaf.

  Args:
    params: params pytree that may hold PackedLeaf.

  Returns:
    The tree with the original compressed leaves.
  """
  return map_selected_leaves(params, lambda x: isinstance(x, PackedLeaf), _unpack_leaves)


def _unpack_leaves(packed: list) -> list:
  if _host_readable([leaf.flat for leaf in packed]):
    return [_unpack_on_host(leaf) for leaf in packed]
  # Otherwise one jitted program for every slice: eagerly, each of the ~3,400 slices of a
  # SmolLM2 tree compiled its own tiny program (minutes, and once a segfault inside XLA).
  return _unpack_all(packed)


def _unpack_on_host(leaf: PackedLeaf) -> Any:
  """PackedLeaf.unpack with numpy slices (no compiles), arrays placed like the flat vector."""
  flat = np.asarray(leaf.flat)
  return leaf.rebuild(lambda start, stop, shape:
                      _replicated_like(flat[start:stop].reshape(shape), leaf.flat))


@jax.jit
def _unpack_all(packed: list) -> list:
  return [leaf.unpack() for leaf in packed]
