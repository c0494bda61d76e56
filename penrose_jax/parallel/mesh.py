"""Device meshes and multi-host start-up.

The same code runs on one CPU, on N fake CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=N`, set before JAX initialises) and on a
multi-host TPU pod / multi-GPU cluster. A mesh is described by a mapping from axis name to size,
e.g. `{'data': -1, 'fsdp': 1, 'tensor': 1}`, where at most one size may be -1 ("all remaining
devices"). The mesh spans *all global devices* (every process sees the same mesh), as
multi-controller JAX requires.

Axis types are `AxisType.Auto` (GSPMD propagation): the model code carries no sharding
annotations, so the compiler propagates the param/batch shardings through it. (JAX's own
`jax.make_mesh` defaults to Explicit axes in this version, which would change semantics.)
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Optional, Sequence

import jax
import ml_collections
import numpy as np

_LOG = logging.getLogger(__name__)

DEFAULT_MESH_SHAPE: dict[str, int] = {"data": -1, "fsdp": 1, "tensor": 1}

# Mesh-axis order used when the shape comes from a ConfigDict (whose keys() are sorted, so the
# written order is lost): outermost (slowest links, e.g. across hosts) first, 'tensor' innermost.
# Axes not listed here go after the listed ones, in ConfigDict key order.
CANONICAL_AXIS_ORDER: tuple[str, ...] = ("data", "fsdp", "sequence", "expert", "tensor")

_distributed_initialized = False


def _as_dict(mesh_shape: Any) -> dict[str, Any]:
  """Turns a dict / ConfigDict / sequence of (name, size) pairs into an ordered plain dict."""
  if isinstance(mesh_shape, ml_collections.ConfigDict):
    values = mesh_shape.to_dict()
    rank = {name: i for i, name in enumerate(CANONICAL_AXIS_ORDER)}
    names = sorted(values, key=lambda n: rank.get(n, len(rank)))
    return {name: values[name] for name in names}
  if isinstance(mesh_shape, Mapping):
    return dict(mesh_shape)
  if isinstance(mesh_shape, Sequence) and not isinstance(mesh_shape, str):
    return {str(name): size for name, size in mesh_shape}
  raise TypeError(f"mesh_shape must be a mapping like {{'data': -1, 'fsdp': 1}}, "
                  f"got {type(mesh_shape).__name__}: {mesh_shape!r}")


def resolve_mesh_shape(mesh_shape: Any, device_count: Optional[int] = None) -> dict[str, int]:
  """Replaces the one -1 entry of a mesh shape and checks the sizes multiply to the device count.

  Args:
    mesh_shape: mapping axis name -> size (dict, ConfigDict or list of (name, size) pairs), in
      mesh-axis order (outermost first; put 'data' first, 'tensor' last for locality). A
      ConfigDict loses the written order, so its axes follow CANONICAL_AXIS_ORDER.
      At most one size may be -1, meaning "all remaining devices".
    device_count: number of devices to fill; default `jax.device_count()` (global, all hosts).

  Returns:
    Ordered dict axis name -> positive size whose product equals device_count.

  Raises:
    ValueError: with the requested shape and the device count when they do not fit.
  """
  shape = _as_dict(mesh_shape)
  count = jax.device_count() if device_count is None else int(device_count)
  if not shape:
    raise ValueError(f"mesh_shape is empty; expected e.g. {DEFAULT_MESH_SHAPE} "
                     f"(jax.device_count()={count})")
  for name, size in shape.items():
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or (
        size != -1 and size < 1):
      raise ValueError(f"mesh_shape {shape}: size of axis {name!r} must be a positive int or -1, "
                       f"got {size!r} (jax.device_count()={count})")
  free = [name for name, size in shape.items() if size == -1]
  if len(free) > 1:
    raise ValueError(f"mesh_shape {shape}: at most one axis may be -1, got {free} "
                     f"(jax.device_count()={count})")
  fixed = math.prod(int(size) for size in shape.values() if size != -1)
  resolved = {name: int(size) for name, size in shape.items()}
  if free:
    if count % fixed:
      raise ValueError(f"mesh_shape {shape}: the fixed axes multiply to {fixed}, which does not "
                       f"divide jax.device_count()={count}, so -1 for axis {free[0]!r} cannot "
                       f"be filled")
    resolved[free[0]] = count // fixed
  elif fixed != count:
    raise ValueError(f"mesh_shape {shape} has {fixed} devices in total but "
                     f"jax.device_count()={count}; the product of the axis sizes must equal the "
                     f"device count (use -1 on one axis to take all remaining devices)")
  return resolved


def make_mesh(mesh_shape: Any = None,
              devices: Optional[Sequence[jax.Device]] = None) -> jax.sharding.Mesh:
  """Builds a device mesh over all (global) devices.

  Args:
    mesh_shape: mapping axis name -> size like `{'data': -1, 'fsdp': 1, 'tensor': 1}`
      (dict or ConfigDict, axis order = mesh order); None means DEFAULT_MESH_SHAPE.
    devices: devices to use; default all of `jax.devices()` (every process's devices).

  Returns:
    A `jax.sharding.Mesh` with Auto axis types, laid out by `jax.make_mesh` (topology-aware
    on TPU; row-major over `devices` when they are given explicitly).

  Raises:
    ValueError: when the sizes do not multiply to the device count (message names both).
  """
  devices = list(jax.devices()) if devices is None else list(devices)
  shape = resolve_mesh_shape(DEFAULT_MESH_SHAPE if mesh_shape is None else mesh_shape,
                             len(devices))
  names, sizes = tuple(shape), tuple(shape.values())
  axis_types = (jax.sharding.AxisType.Auto,) * len(names)
  if len(devices) == jax.device_count() and devices == list(jax.devices()):
    return jax.make_mesh(sizes, names, axis_types=axis_types)
  return jax.sharding.Mesh(np.asarray(devices, dtype=object).reshape(sizes), names,
                           axis_types=axis_types)


def mesh_axis_sizes(mesh: Any) -> dict[str, int]:
  """Returns axis name -> size for a Mesh, an AbstractMesh or an already-plain mapping.

  Args:
    mesh: a `jax.sharding.Mesh`/`AbstractMesh`, or a mapping name -> size.

  Returns:
    Ordered dict axis name -> size.
  """
  if isinstance(mesh, Mapping):
    return {str(k): int(v) for k, v in mesh.items()}
  return {str(k): int(v) for k, v in mesh.shape.items()}


def maybe_initialize_distributed(enabled: bool, coordinator_address: Optional[str] = None,
                                 num_processes: Optional[int] = None,
                                 process_id: Optional[int] = None) -> bool:
  """Calls `jax.distributed.initialize` once, behind a flag (for multi-host runs).

  Must run before anything touches a JAX backend (before `jax.devices()`, any array op, ...).
  On Cloud TPU pods, SLURM and Open MPI clusters, leave the arguments as None: JAX detects the
  coordinator, process count and process id itself. On other GPU clusters pass all three.

  Args:
    enabled: False does nothing (single host: one CPU, one GPU, one TPU VM).
    coordinator_address: 'host:port' of process 0, or None to auto-detect.
    num_processes: total number of processes, or None to auto-detect.
    process_id: this process's index in [0, num_processes), or None to auto-detect.

  Returns:
    True when the distributed runtime is (now or already) initialised, False when disabled.
  """
  global _distributed_initialized
  if not enabled:
    return False
  if _distributed_initialized or jax.distributed.is_initialized():
    _distributed_initialized = True
    return True
  kwargs = {k: v for k, v in dict(coordinator_address=coordinator_address,
                                  num_processes=num_processes,
                                  process_id=process_id).items() if v is not None}
  jax.distributed.initialize(**kwargs)
  _distributed_initialized = True
  _LOG.info("jax.distributed initialised: process %d of %d, %d local / %d global devices",
            jax.process_index(), jax.process_count(), jax.local_device_count(),
            jax.device_count())
  return True
