"""Putting params and batches on a mesh (big_vision style), single- or multi-host.

Params are never built whole on one host and then split: `init_sharded` runs
`jax.eval_shape(init_fn)` to get the abstract tree, derives the shardings from the rules, and
calls `jax.jit(init_fn, out_shardings=...)()` so each device only materialises its own shards.
Params that already exist on the host (a loaded GGUF / safetensors model) go through
`shard_params`. Batches are split along their leading dimension over the data axes by
`shard_batch`; on a multi-host run each process passes only its own rows (process-local data).
For orbax restores, `abstract_with_shardings` gives the ShapeDtypeStruct tree that
`ocp.args.StandardRestore` needs to restore straight into the target layout.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from penrose_jax.parallel.rules import shardings_for

_LOG = logging.getLogger(__name__)

DEFAULT_DATA_AXES: tuple[str, ...] = ("data", "fsdp")

# Stack of (mesh, data_axes) set by `batch_placement`; empty = `place_batch` is the identity.
_placement_stack: list[tuple[jax.sharding.Mesh, tuple[str, ...]]] = []
_fallback_logged: set[tuple] = set()


def init_sharded(init_fn: Callable[..., Any], mesh: jax.sharding.Mesh, rules: Any = None,
                 *args: Any) -> tuple[Any, Any]:
  """Initialises a params tree directly in its sharded layout.

  Args:
    init_fn: pure function building the params from `args` (e.g. a PRNG key); must be
      jittable. Example: `lambda key: LlamaModel(cfg).init(key, tokens)['params']`.
    mesh: the device mesh.
    rules: sharding rules (None = DEFAULT_RULES).
    *args: positional arguments of init_fn (replicated inputs).

  Returns:
    (params, shardings): the sharded params and the NamedSharding tree used.
  """
  abstract = jax.eval_shape(init_fn, *args)
  shardings = shardings_for(abstract, mesh, rules)
  params = jax.jit(init_fn, out_shardings=shardings)(*args)
  return params, shardings


def _put_global(value: Any, sharding: NamedSharding) -> jax.Array:
  """Places one host value (identical on every process) onto a possibly multi-host sharding."""
  if isinstance(value, jax.Array) or jax.process_count() == 1:
    return jax.device_put(value, sharding)
  host = np.asarray(value)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_params(params: Any, mesh: jax.sharding.Mesh, rules: Any = None) -> Any:
  """Moves an existing params tree onto the mesh with the rules' shardings.

  Args:
    params: pytree of host (numpy) or device arrays; compressed leaves are allowed. On a
      multi-host run every process must pass the same host values (e.g. each reads the file).
    mesh: the device mesh.
    rules: sharding rules (None = DEFAULT_RULES).

  Returns:
    The same tree with every array a sharded `jax.Array`.
  """
  shardings = shardings_for(params, mesh, rules)
  return jax.tree_util.tree_map(_put_global, params, shardings)


def _present_axes(mesh: jax.sharding.Mesh, data_axes: Sequence[str]) -> tuple[str, ...]:
  return tuple(a for a in data_axes if a in mesh.shape)


def batch_sharding(mesh: jax.sharding.Mesh,
                   data_axes: Sequence[str] = DEFAULT_DATA_AXES) -> NamedSharding:
  """Sharding that splits dimension 0 over the data axes and replicates the rest.

  Args:
    mesh: the device mesh.
    data_axes: mesh axes the batch dimension is split over; axes absent from the mesh are
      ignored. ('data', 'fsdp') is the usual choice: FSDP devices also take different rows.

  Returns:
    NamedSharding(mesh, P(data_axes)).
  """
  axes = _present_axes(mesh, data_axes)
  return NamedSharding(mesh, PartitionSpec(axes if axes else None))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Fully replicated sharding (scalars such as the loss or the step).

  Args:
    mesh: the device mesh.

  Returns:
    NamedSharding(mesh, P()).
  """
  return NamedSharding(mesh, PartitionSpec())


def shard_batch(batch: Any, mesh: jax.sharding.Mesh,
                data_axes: Sequence[str] = DEFAULT_DATA_AXES) -> Any:
  """Places a batch (e.g. (B, T) token ids) with its leading dimension split over data axes.

  On one process `batch` is the whole global batch. On several processes each process passes
  its own rows (B / process_count of them, in process order) and the result is the global
  array (`jax.make_array_from_process_local_data`).

  Args:
    batch: pytree of arrays sharing the leading batch dimension.
    mesh: the device mesh.
    data_axes: mesh axes the batch dimension is split over.

  Returns:
    Same tree of global `jax.Array`s sharded P(data_axes).

  Raises:
    ValueError: when the (global) batch size is not divisible by the data-parallel size.
  """
  sharding = batch_sharding(mesh, data_axes)
  axes = _present_axes(mesh, data_axes)
  parts = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1

  def one(x):
    x = np.asarray(x) if not isinstance(x, jax.Array) else x
    if x.ndim == 0:
      raise ValueError("shard_batch: leaves need a leading batch dimension, got a scalar")
    global_rows = x.shape[0] * jax.process_count()
    if global_rows % parts:
      raise ValueError(f"shard_batch: global batch size {global_rows} (leaf shape {x.shape} x "
                       f"{jax.process_count()} processes) is not divisible by the data-parallel "
                       f"size {parts} = product of mesh axes {axes} of {dict(mesh.shape)}")
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    return jax.make_array_from_process_local_data(sharding, np.asarray(x))

  return jax.tree_util.tree_map(one, batch)


def abstract_with_shardings(tree: Any, mesh: jax.sharding.Mesh, rules: Any = None,
                            shardings: Optional[Any] = None) -> Any:
  """ShapeDtypeStruct tree carrying target shardings, for sharded orbax restores.

  Use: `ckptr.restore(path, args=ocp.args.StandardRestore(abstract_with_shardings(...)))`
  restores each array straight into its shards on the target mesh, whatever mesh it was saved
  from.

  Args:
    tree: pytree of arrays or ShapeDtypeStructs with the target shapes/dtypes (e.g.
      `jax.eval_shape(init_fn)` or the tree read from checkpoint metadata).
    mesh: the target mesh.
    rules: sharding rules (None = DEFAULT_RULES); ignored when `shardings` is given.
    shardings: optional explicit NamedSharding tree matching `tree`.

  Returns:
    Same structure with `jax.ShapeDtypeStruct(shape, dtype, sharding=...)` leaves.
  """
  if shardings is None:
    shardings = shardings_for(tree, mesh, rules)
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s), tree, shardings)


def shardings_of(tree: Any) -> Any:
  """The sharding of every array leaf of a tree (e.g. to reuse as jit in/out shardings).

  Args:
    tree: pytree of `jax.Array`s (or ShapeDtypeStructs with shardings).

  Returns:
    Same structure with each leaf's `.sharding`.
  """
  return jax.tree_util.tree_map(lambda x: x.sharding, tree)


@contextlib.contextmanager
def batch_placement(mesh: jax.sharding.Mesh,
                    data_axes: Sequence[str] = DEFAULT_DATA_AXES) -> Iterator[None]:
  """Within the block, `place_batch` (called by library code that builds batches) splits
  batches over `data_axes` of `mesh`; outside any block it does nothing.

  Jobs open one block around their work, so perplexity / scoring / alignment / Q&A training
  batches land on the mesh without threading the mesh through every library signature.

  Args:
    mesh: the device mesh.
    data_axes: mesh axes the batch dimension is split over.

  Returns:
    A context manager.
  """
  _placement_stack.append((mesh, tuple(data_axes)))
  try:
    yield
  finally:
    _placement_stack.pop()


def place_batch(batch: Any) -> Any:
  """Places a batch built identically on every process onto the active `batch_placement` mesh.

  Leaves are split along dimension 0 over the data axes; when a leaf's row count is not
  divisible by the data-parallel size the whole batch is replicated instead (logged once per
  shape). Unlike `shard_batch`, the input is the *global* batch (library code builds the same
  batch on every process), so this is also correct on multi-host runs.

  Args:
    batch: pytree of arrays sharing the leading batch dimension (numpy or jax).

  Returns:
    `batch` unchanged when no `batch_placement` block is active, else the same tree of
    `jax.Array`s sharded P(data_axes) or replicated.
  """
  if not _placement_stack:
    return batch
  mesh, data_axes = _placement_stack[-1]
  axes = _present_axes(mesh, data_axes)
  parts = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
  leaves = jax.tree_util.tree_leaves(batch)
  rows = {int(np.shape(x)[0]) if np.ndim(x) else 0 for x in leaves}
  if parts > 1 and any(r == 0 or r % parts for r in rows):
    key = (tuple(sorted(rows)), parts, axes)
    if key not in _fallback_logged:
      _fallback_logged.add(key)
      _LOG.warning("place_batch: batch rows %s not divisible by the data-parallel size %d "
                   "(mesh axes %s of %s); replicating this batch instead", sorted(rows), parts,
                   axes, dict(mesh.shape))
    sharding = replicated(mesh)
  else:
    sharding = batch_sharding(mesh, data_axes)
  return jax.tree_util.tree_map(lambda x: _put_global(x, sharding), batch)


def to_host(x: Any) -> np.ndarray:
  """numpy value of an array, gathering shards held by other processes when needed.

  Args:
    x: a numpy array or `jax.Array` (possibly sharded over several processes).

  Returns:
    The full array as numpy.
  """
  if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)
