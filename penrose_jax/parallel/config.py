"""The `parallel` block of experiment configs (ml_collections)."""

from __future__ import annotations

from typing import Optional

import jax
import ml_collections

from penrose_jax.parallel.mesh import DEFAULT_MESH_SHAPE, make_mesh, maybe_initialize_distributed
from penrose_jax.parallel.placement import DEFAULT_DATA_AXES
from penrose_jax.parallel.rules import DEFAULT_RULES, Rule, rules_from_config, rules_to_config


def default_parallel_config(mesh_shape: Optional[dict] = None) -> ml_collections.ConfigDict:
  """Returns the config block experiments put at `config.parallel`.

  Fields:
    distributed: call `jax.distributed.initialize()` at start-up (multi-host runs only).
    coordinator_address / num_processes / process_id: '' / -1 / -1 = auto-detect (TPU pods,
      SLURM, Open MPI); set all three on other multi-host GPU clusters.
    mesh_shape: ordered axis name -> size; one -1 takes all remaining devices.
    sharding_rules: [[regex, [axes...]], ...]; first match wins (see parallel/rules.py).
    data_axes: mesh axes the batch dimension is split over.

  Args:
    mesh_shape: optional override of DEFAULT_MESH_SHAPE.

  Returns:
    A ConfigDict (override from the command line, e.g.
    `--config.parallel.mesh_shape.fsdp=8 --config.parallel.mesh_shape.data=-1`).
  """
  config = ml_collections.ConfigDict()
  config.distributed = False
  config.coordinator_address = ""
  config.num_processes = -1
  config.process_id = -1
  config.mesh_shape = ml_collections.ConfigDict(dict(mesh_shape or DEFAULT_MESH_SHAPE))
  config.sharding_rules = rules_to_config(DEFAULT_RULES)
  config.data_axes = list(DEFAULT_DATA_AXES)
  return config


def setup_for_job(
    job_config: ml_collections.ConfigDict) -> tuple[jax.sharding.Mesh, list[Rule], tuple[str, ...]]:
  """`setup_from_config(job_config.parallel)`, with the defaults when a job config has no
  `parallel` section (configs written before it existed, hand-built test configs).

  Args:
    job_config: a job's config (compress, align, qa_tune, evaluate, ...).

  Returns:
    (mesh, rules, data_axes).
  """
  block = job_config.get("parallel", None) if hasattr(job_config, "get") else None
  return setup_from_config(block if block is not None else default_parallel_config())


def setup_from_config(
    config: ml_collections.ConfigDict) -> tuple[jax.sharding.Mesh, list[Rule], tuple[str, ...]]:
  """Start-up of a (possibly multi-host) job from its `config.parallel` block.

  Calls `maybe_initialize_distributed` (so call this before any other JAX use), then builds the
  mesh and normalises the rules.

  Args:
    config: a block shaped like `default_parallel_config()`; missing fields take the defaults.

  Returns:
    (mesh, rules, data_axes).
  """
  defaults = default_parallel_config()
  get = lambda name: config.get(name, defaults[name])
  maybe_initialize_distributed(
      bool(get("distributed")),
      coordinator_address=get("coordinator_address") or None,
      num_processes=get("num_processes") if get("num_processes") > 0 else None,
      process_id=get("process_id") if get("process_id") >= 0 else None)
  mesh = make_mesh(get("mesh_shape"))
  return mesh, rules_from_config(get("sharding_rules")), tuple(get("data_axes"))
