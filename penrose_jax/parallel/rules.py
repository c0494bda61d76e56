"""Sharding rules kept as data: (regex over a '/'-joined param path, partition spec).

A rule is `(pattern, spec)` where `spec` is a tuple with one entry per array dimension
(leading dimensions first): an entry is None (replicated), a mesh axis name ('fsdp'), or a
tuple of axis names (('data', 'fsdp'): the dimension is split over both). A spec shorter than
the array leaves the trailing dimensions replicated; `()` replicates the whole array.

Rules are plain lists, so they live in an ml_collections config as `[[regex, [axes...]], ...]`
(`rules_from_config` turns that back into tuples).

Matching. A leaf's path is its `jax.tree_util.tree_flatten_with_path` keys joined by '/': dict
keys, dataclass field names (GetAttrKey) and sequence indices, e.g. 'layers_0/attn/q_proj/kernel'
for a dense kernel and 'layers_0/attn/q_proj/kernel/u' for the field `u` of a compressed leaf.
A rule matches when `re.fullmatch(pattern, suffix)` holds for the whole path or for any suffix of
it that starts after a '/'. So 'embed/embedding' matches 'embed/embedding' and also the optimizer
state copy '1/mu/embed/embedding', but never 'layers_0/attn/q_proj/kernel/u' via a '.../kernel'
rule. The first matching rule wins; an unmatched leaf is replicated.

Fallbacks (each logged once, with layer numbers wildcarded): a dimension whose size is not
divisible by the product of its mesh axis sizes (e.g. 3 KV heads x 64 = 192 columns on a
'tensor' axis of 5, or 9 heads x 4 = 36 rows on an 8-way 'fsdp') is replicated on that
dimension; mesh axes named by a rule but absent from the mesh are dropped (so the default rules
work on a ('data', 'fsdp') mesh without 'tensor'); a spec longer than the array is cut.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import jax
from jax.sharding import NamedSharding, PartitionSpec

from penrose_jax.parallel.mesh import mesh_axis_sizes

_LOG = logging.getLogger(__name__)

AxisEntry = Union[None, str, tuple[str, ...]]
Spec = tuple[AxisEntry, ...]
Rule = tuple[str, Spec]

# Dense layout of docs/CONTRACTS_DEV.md: kernels are (in, out). 'fsdp' splits the stored params
# (ZeRO-3 style, gathered per layer by the compiler); 'tensor' splits heads / MLP width
# (Megatron: column-parallel q/k/v/gate/up, row-parallel o/down). Compressed leaves (any array
# field under a '.../kernel' node) are stacks of per-tile arrays, (g, h, r) / (g, w, r) /
# (g, h, w) / values (g, k): they are split along the leading tile axis over 'fsdp'.
DEFAULT_RULES: list[Rule] = [
    (r"embed/embedding", ("tensor", "fsdp")),
    (r".*(q_proj|k_proj|v_proj|gate_proj|up_proj)/kernel", ("fsdp", "tensor")),
    (r".*(o_proj|down_proj)/kernel", ("tensor", "fsdp")),
    (r"lm_head/kernel", ("fsdp", "tensor")),
    (r".*/kernel/.+", ("fsdp",)),  # compressed-leaf fields: leading tile axis
    (r".*(_norm|norm)/scale", ()),
    (r".*/bias", ()),
]

# Data-parallel only: every param replicated (the behaviour of an empty rule list, spelled out).
REPLICATED_RULES: list[Rule] = [(r".*", ())]

_logged: set[tuple] = set()


def _log_once(key: tuple, message: str, *args: Any) -> None:
  """Logs a warning the first time `key` is seen in this process."""
  if key not in _logged:
    _logged.add(key)
    _LOG.warning(message, *args)


def _normalize_entry(entry: Any) -> AxisEntry:
  """One spec entry from config data: None, 'axis', or a list/tuple of axis names."""
  if entry is None or isinstance(entry, str):
    return entry
  if isinstance(entry, Iterable):
    names = tuple(entry)
    if not all(isinstance(n, str) for n in names):
      raise ValueError(f"sharding rule entry {entry!r}: a list entry must hold axis names only")
    return names if names else None
  raise ValueError(f"sharding rule entry {entry!r} must be None, an axis name or a list of names")


def rules_from_config(rules: Any) -> list[Rule]:
  """Normalises rules from a config (lists of [regex, [axes...]]) into (regex, tuple) pairs.

  Args:
    rules: a sequence of (pattern, spec) pairs; spec entries are None, an axis name, or a list
      of axis names. None means DEFAULT_RULES. Each pattern must compile as a Python regex.

  Returns:
    List of (pattern, spec tuple).

  Raises:
    ValueError: on a malformed rule or a regex that does not compile (the message names it).
  """
  if rules is None:
    return list(DEFAULT_RULES)
  out: list[Rule] = []
  for i, rule in enumerate(rules):
    if isinstance(rule, str) or len(rule) != 2:
      raise ValueError(f"sharding rule #{i} {rule!r} must be a pair [regex, [axes...]]")
    pattern, spec = rule
    try:
      re.compile(pattern)
    except re.error as e:
      raise ValueError(f"sharding rule #{i}: bad regex {pattern!r}: {e}") from e
    if spec is None:
      spec = ()
    if isinstance(spec, str):
      raise ValueError(f"sharding rule #{i} ({pattern!r}): spec must be a list of axes, "
                       f"got the string {spec!r}; write [{spec!r}]")
    out.append((str(pattern), tuple(_normalize_entry(e) for e in spec)))
  return out


def rules_to_config(rules: Sequence[Rule]) -> list[list[Any]]:
  """Turns rules into nested lists that an ml_collections ConfigDict / JSON stores.

  Args:
    rules: (pattern, spec) pairs.

  Returns:
    [[pattern, [entry, ...]], ...] with tuple entries as lists.
  """
  return [[p, [list(e) if isinstance(e, tuple) else e for e in spec]]
          for p, spec in rules_from_config(rules)]


def path_to_str(path: Sequence[Any]) -> str:
  """Joins a `tree_flatten_with_path` key path with '/'.

  Args:
    path: sequence of DictKey / GetAttrKey / SequenceKey / FlattenedIndexKey.

  Returns:
    e.g. 'layers_0/attn/q_proj/kernel/u'.
  """
  parts = []
  for key in path:
    if isinstance(key, jax.tree_util.DictKey):
      parts.append(str(key.key))
    elif isinstance(key, jax.tree_util.GetAttrKey):
      parts.append(key.name)
    elif isinstance(key, jax.tree_util.SequenceKey):
      parts.append(str(key.idx))
    elif isinstance(key, jax.tree_util.FlattenedIndexKey):
      parts.append(str(key.key))
    else:
      parts.append(str(key).strip(".[]'\""))
  return "/".join(parts)


def find_rule(path: str, rules: Sequence[Rule]) -> Optional[Rule]:
  """Returns the first rule matching `path` (or a '/'-suffix of it), None when none does.

  Args:
    path: '/'-joined leaf path.
    rules: normalised rules.

  Returns:
    The matching (pattern, spec) or None.
  """
  parts = path.split("/")
  suffixes = ["/".join(parts[i:]) for i in range(len(parts))]
  for rule in rules:
    compiled = re.compile(rule[0])
    if any(compiled.fullmatch(s) for s in suffixes):
      return rule
  return None


def _entry_axes(entry: AxisEntry) -> tuple[str, ...]:
  if entry is None:
    return ()
  return (entry,) if isinstance(entry, str) else tuple(entry)


def spec_for_shape(path: str, shape: Sequence[int], spec: Spec,
                   axis_sizes: Mapping[str, int]) -> PartitionSpec:
  """Fits a rule's spec to one array: drops unknown axes, replicates non-divisible dimensions.

  Args:
    path: the leaf path (for log messages).
    shape: the array shape.
    spec: the rule's spec tuple.
    axis_sizes: mesh axis name -> size.

  Returns:
    A PartitionSpec with at most len(shape) entries.

  Raises:
    ValueError: when one mesh axis is used on two dimensions.
  """
  shape = tuple(int(d) for d in shape)
  if len(spec) > len(shape):
    if any(e is not None for e in spec[len(shape):]):
      _log_once((path, "rank"), "sharding: %s has shape %s, rule spec %s is longer; cutting it",
                path, shape, spec)
    spec = spec[:len(shape)]
  used: set[str] = set()
  entries: list[AxisEntry] = []
  for dim, (size, entry) in enumerate(zip(shape, spec)):
    axes = []
    for axis in _entry_axes(entry):
      if axis not in axis_sizes:
        _log_once(("axis", axis), "sharding: mesh %s has no axis %r (rule for %s); treating it "
                  "as size 1", dict(axis_sizes), axis, path)
        continue
      if axis in used:
        raise ValueError(f"sharding rule for {path}: mesh axis {axis!r} used on two dimensions "
                         f"in spec {spec}")
      used.add(axis)
      axes.append(axis)
    parts = math.prod(axis_sizes[a] for a in axes)
    if axes and size % parts:
      _log_once((re.sub(r"\d+", "*", path), dim, size),
                "sharding: %s dim %d (size %d) is not divisible by mesh axes %s (%d); "
                "replicating that dimension", path, dim, size, tuple(axes), parts)
      axes = []
    entries.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
  while entries and entries[-1] is None:
    entries.pop()
  return PartitionSpec(*entries)


def _shape_of(leaf: Any) -> tuple[int, ...]:
  shape = getattr(leaf, "shape", None)
  return () if shape is None else tuple(shape)


def partition_specs_for(tree: Any, mesh: Any, rules: Any = None) -> Any:
  """PartitionSpec for every array leaf of a (possibly abstract) tree, by the rules.

  Args:
    tree: pytree of arrays / ShapeDtypeStructs / numpy arrays; compressed leaves (pytree
      dataclasses) are traversed into their array fields.
    mesh: a Mesh, AbstractMesh, or a mapping axis name -> size (no devices needed).
    rules: rule list (tuples or config lists); None means DEFAULT_RULES.

  Returns:
    A pytree with the same structure whose leaves are PartitionSpecs.
  """
  rules = rules_from_config(rules)
  axis_sizes = mesh_axis_sizes(mesh)

  def one(path, leaf):
    name = path_to_str(path)
    rule = find_rule(name, rules)
    if rule is None:
      return PartitionSpec()
    return spec_for_shape(name, _shape_of(leaf), rule[1], axis_sizes)

  return jax.tree_util.tree_map_with_path(one, tree)


def shardings_for(abstract_tree: Any, mesh: jax.sharding.Mesh, rules: Any = None) -> Any:
  """NamedSharding for every array leaf of a (possibly abstract) tree.

  Args:
    abstract_tree: pytree of arrays or ShapeDtypeStructs (e.g. `jax.eval_shape(init_fn)`).
    mesh: the device mesh.
    rules: rule list (tuples or config lists); None means DEFAULT_RULES. The first matching
      rule wins; non-divisible dimensions fall back to replication; unmatched -> replicated.

  Returns:
    A pytree with the same structure whose leaves are `NamedSharding(mesh, spec)`.
  """
  specs = partition_specs_for(abstract_tree, mesh, rules)
  return jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), specs,
                                is_leaf=lambda x: isinstance(x, PartitionSpec))


def describe_specs(tree: Any, mesh: Any, rules: Any = None) -> dict[str, str]:
  """Human-readable 'path -> shape spec' table (for logs and reports).

  Args:
    tree: pytree of arrays or ShapeDtypeStructs.
    mesh: Mesh or mapping axis name -> size.
    rules: rule list; None means DEFAULT_RULES.

  Returns:
    Dict from '/'-joined leaf path to e.g. '(64, 128) PartitionSpec('fsdp', 'tensor')'.
  """
  specs = partition_specs_for(tree, mesh, rules)
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  spec_leaves = jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
  return {path_to_str(p): f"{_shape_of(leaf)} {spec}"
          for (p, leaf), spec in zip(leaves, spec_leaves)}
