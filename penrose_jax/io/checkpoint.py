"""Orbax checkpoints of params pytrees that may hold registered compressed leaves.

Layout of a checkpoint directory:
  arrays/                    orbax StandardCheckpointer output (a nested dict of arrays; each
                             compressed leaf is replaced by the dict of its `checkpoint_arrays()`)
  penrose_checkpoint.json    which subtrees are compressed leaves (class name, defining module,
                             meta), the shape and dtype of every array, and the user metadata.

On restore, a leaf class that is not registered yet is looked up by importing its module.

Orbax writes `arrays/` to a temp dir and renames it; the JSON sidecar is written last, via temp
file + os.replace, so a directory without the sidecar is an unfinished save and is refused.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pathlib
from typing import Any, Callable, Mapping, Optional, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp

from penrose_jax.io.errors import CheckpointFormatError
from penrose_jax.io.json_files import read_json, write_json_atomic
from penrose_jax.io.reader_base import set_path
from penrose_jax.models import lora
from penrose_jax.models.linear import is_compressed

SIDECAR_FILE = "penrose_checkpoint.json"
ARRAYS_DIR = "arrays"
FORMAT_VERSION = 1
_REQUIRED_METHODS = ("checkpoint_arrays", "checkpoint_meta", "from_checkpoint")
_LEAF_TYPES: dict[str, type] = {}
LeafType = TypeVar("LeafType", bound=type)


def register_leaf_type(cls: LeafType) -> LeafType:
  """Registers a compressed leaf class for checkpoints (use as a class decorator).

  Args:
    cls: a class with `checkpoint_arrays()`, `checkpoint_meta()` and classmethod
      `from_checkpoint(arrays, meta)`. Its key is the class name.

  Returns:
    The class, unchanged.
  """
  missing = [m for m in _REQUIRED_METHODS if not callable(getattr(cls, m, None))]
  if missing:
    raise TypeError(f"register_leaf_type: {cls.__qualname__} lacks {missing}")
  previous = _LEAF_TYPES.get(cls.__name__)
  if previous is not None and (previous.__module__, previous.__qualname__) != (
      cls.__module__, cls.__qualname__):
    raise ValueError(f"register_leaf_type: name {cls.__name__!r} is already registered by "
                     f"{previous.__module__}.{previous.__qualname__}")
  _LEAF_TYPES[cls.__name__] = cls
  return cls


# LoRA adapters are a models/ leaf; models/ sits below io/, so io registers them.
register_leaf_type(lora.LoRAKernel)


def registered_leaf_types() -> dict[str, type]:
  """Returns a copy of the registry (class name -> class)."""
  return dict(_LEAF_TYPES)


def _is_registered(value: Any) -> bool:
  return _LEAF_TYPES.get(type(value).__name__) is type(value)


def _is_array(value: Any) -> bool:
  return isinstance(value, (np.ndarray, np.generic, jax.Array))


def _record(path: list[str], array: Any) -> dict[str, Any]:
  return {"path": path, "shape": list(np.shape(array)), "dtype": str(array.dtype)}


def _split(node: Any, path: list[str], leaves: list, arrays: list) -> Any:
  """Replaces compressed leaves by their array dicts, recording leaves and arrays."""
  where = "params" + "".join(f"[{k!r}]" for k in path)
  if _is_registered(node):
    stored = dict(node.checkpoint_arrays())
    for name, array in stored.items():
      if not isinstance(name, str) or not _is_array(array):
        raise TypeError(f"save_params: {where}.checkpoint_arrays() must map str to arrays, got "
                        f"{name!r}: {type(array).__name__}")
      arrays.append(_record(path + [name], array))
    leaves.append({"path": path, "class": type(node).__name__, "module": type(node).__module__,
                   "meta": node.checkpoint_meta(), "arrays": sorted(stored)})
    return stored
  if is_compressed(node):
    raise TypeError(f"save_params: {where} is a {type(node).__name__}, which is not registered; "
                    "decorate the class with penrose_jax.io.checkpoint.register_leaf_type")
  if isinstance(node, Mapping):
    out = {}
    for key, value in node.items():
      if not isinstance(key, str):
        raise TypeError(f"save_params: {where} has non-string key {key!r}")
      out[key] = _split(value, path + [key], leaves, arrays)
    return out
  if _is_array(node):
    arrays.append(_record(path, node))
    return node
  raise TypeError(f"save_params: {where} is a {type(node).__name__}; params must be nested "
                  "dicts of arrays and registered compressed leaves")


def _json_default(value: Any) -> Any:
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return dataclasses.asdict(value)
  if isinstance(value, (np.generic, np.ndarray)):
    return value.tolist()
  if isinstance(value, os.PathLike):
    return os.fspath(value)
  raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _to_json(value: Any, what: str) -> Any:
  try:
    return json.loads(json.dumps(value, default=_json_default))
  except (TypeError, ValueError) as err:
    raise TypeError(f"save_params: {what} must be JSON serialisable ({err})") from err


def save_params(directory: str | os.PathLike, params: Mapping[str, Any],
                metadata: Optional[Mapping[str, Any]] = None, overwrite: bool = False
                ) -> pathlib.Path:
  """Saves a params pytree (dense arrays and registered compressed leaves).

  Args:
    directory: checkpoint directory (created; must not already hold a checkpoint unless
      overwrite).
    params: nested dicts of arrays / registered compressed leaves.
    metadata: JSON-serialisable user metadata (dataclasses such as ModelConfig become dicts).
    overwrite: replace an existing checkpoint in `directory`.

  Returns:
    The checkpoint directory (absolute).
  """
  directory = pathlib.Path(directory).absolute()
  leaves: list = []
  records: list = []
  tree = _split(params, [], leaves, records)
  sidecar = {"format": "penrose_jax.params", "version": FORMAT_VERSION,
             "compressed_leaves": _to_json(leaves, "checkpoint_meta() of every leaf"),
             "arrays": records, "metadata": _to_json(dict(metadata or {}), "metadata")}
  sidecar_path = directory / SIDECAR_FILE
  if sidecar_path.exists() or (directory / ARRAYS_DIR).exists():
    if not overwrite:
      raise FileExistsError(f"{directory}: already holds a checkpoint (pass overwrite=True)")
    if jax.process_index() == 0:
      sidecar_path.unlink(missing_ok=True)  # mark the old checkpoint incomplete first
  directory.mkdir(parents=True, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory / ARRAYS_DIR, tree, force=overwrite)
    checkpointer.wait_until_finished()
  if jax.process_index() == 0:
    write_json_atomic(sidecar_path, sidecar)
  return directory


def _get_path(tree: Any, path: list[str]) -> Any:
  for key in path:
    if not isinstance(tree, Mapping) or key not in tree:
      return None
    tree = tree[key]
  return tree


def _sharding_for(shardings: Any, path: list[str], leaf_paths: set[tuple[str, ...]]
                  ) -> jax.sharding.Sharding:
  """Finds the sharding of one stored array in a user pytree shaped like the params."""
  default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  if isinstance(shardings, jax.sharding.Sharding):
    return shardings
  leaf_path = next((p for p in leaf_paths if list(p) == path[:len(p)] and len(p) < len(path)),
                   None)
  if leaf_path is None:
    found = _get_path(shardings, path)
    return found if isinstance(found, jax.sharding.Sharding) else default
  node = _get_path(shardings, list(leaf_path))
  if isinstance(node, jax.sharding.Sharding):
    return node  # one sharding for all arrays of the compressed leaf
  if node is not None and hasattr(node, "checkpoint_arrays"):
    node = node.checkpoint_arrays()  # a leaf instance holding shardings (jax.tree.map output)
  found = node.get(path[-1]) if isinstance(node, Mapping) else None
  return found if isinstance(found, jax.sharding.Sharding) else default


def restore_params(directory: str | os.PathLike, shardings: Any = None
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
  """Restores what `save_params` wrote, rebuilding compressed leaves.

  Args:
    directory: the checkpoint directory.
    shardings: None (arrays restored as saved), one `jax.sharding.Sharding` for every array,
      or a pytree shaped like the params whose leaves are Shardings; at a compressed leaf it may
      hold one Sharding, a dict array-name -> Sharding, or a leaf instance with Shardings in its
      array fields (e.g. `jax.tree.map(lambda _: s, params)`). Missing entries go to device 0.

  Returns:
    (params, metadata): the params pytree and the user metadata dict.
  """
  directory = pathlib.Path(directory).absolute()
  if not directory.is_dir():
    raise CheckpointFormatError(f"{directory}: checkpoint directory not found")
  sidecar = read_json(directory / SIDECAR_FILE)
  if sidecar is None:
    raise CheckpointFormatError(f"{directory}: no {SIDECAR_FILE}; not a penrose_jax checkpoint "
                                "or its save did not finish")
  if sidecar.get("format") != "penrose_jax.params" or sidecar.get("version") != FORMAT_VERSION:
    raise CheckpointFormatError(f"{directory / SIDECAR_FILE}: unknown checkpoint format "
                                f"{sidecar.get('format')!r} version {sidecar.get('version')!r}")
  leaves = sidecar["compressed_leaves"]
  for leaf in leaves:
    if leaf["class"] not in _LEAF_TYPES and leaf.get("module"):
      try:  # the defining module registers the class when imported
        importlib.import_module(leaf["module"])
      except ImportError:
        pass
    if leaf["class"] not in _LEAF_TYPES:
      raise CheckpointFormatError(
          f"{directory}: compressed leaf class {leaf['class']!r} at {leaf['path']} is not "
          "registered; import the module that defines it (register_leaf_type) before restoring")
  arrays_dir = directory / ARRAYS_DIR
  if not arrays_dir.is_dir():
    raise CheckpointFormatError(f"{arrays_dir}: array directory missing")
  with ocp.StandardCheckpointer() as checkpointer:
    try:
      if shardings is None:
        tree = checkpointer.restore(arrays_dir)
      else:
        leaf_paths = {tuple(leaf["path"]) for leaf in leaves}
        target: dict = {}
        for record in sidecar["arrays"]:
          sharding = _sharding_for(shardings, record["path"], leaf_paths)
          set_path(target, tuple(record["path"]), jax.ShapeDtypeStruct(
              tuple(record["shape"]), np.dtype(record["dtype"]), sharding=sharding))
        tree = checkpointer.restore(arrays_dir, target)
    except (OSError, ValueError, KeyError) as err:
      raise CheckpointFormatError(f"{arrays_dir}: cannot restore arrays ({err})") from err
  for leaf in sorted(leaves, key=lambda l: -len(l["path"])):
    stored = _get_path(tree, leaf["path"])
    if not isinstance(stored, Mapping) or set(stored) != set(leaf["arrays"]):
      raise CheckpointFormatError(f"{directory}: arrays of leaf {leaf['path']} do not match "
                                  f"{SIDECAR_FILE}")
    value = _LEAF_TYPES[leaf["class"]].from_checkpoint(dict(stored), leaf["meta"])
    if leaf["path"]:
      set_path(tree, tuple(leaf["path"]), value)
    else:
      tree = value
  return tree, sidecar.get("metadata", {})


def map_leaves(fn: Callable[[Any], Any], params: Mapping[str, Any]) -> Any:
  """Applies fn to every dense array and compressed leaf (compressed leaves are not entered).

  Args:
    fn: function of one leaf.
    params: the params pytree.

  Returns:
    The mapped tree.
  """
  return jax.tree.map(fn, params, is_leaf=lambda x: _is_registered(x) or is_compressed(x))
