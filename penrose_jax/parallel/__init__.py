"""penrose_jax.parallel: meshes, sharding rules as data, and sharded placement.

Typical use (identical on one CPU, N fake CPU devices, a GPU box or a multi-host TPU pod):

  mesh, rules, data_axes = setup_from_config(config.parallel)  # before any other JAX call;
  # = maybe_initialize_distributed(...) + make_mesh(mesh_shape) + rules_from_config(rules)
  params = shard_params(params, mesh, rules)                  # or init_sharded(init_fn, ...)
  tokens = shard_batch(tokens, mesh, data_axes)               # (B, T) split over data axes
  with batch_placement(mesh, data_axes): ...                  # library batches via place_batch
"""

from penrose_jax.parallel.config import default_parallel_config, setup_for_job, setup_from_config
from penrose_jax.parallel.mesh import (DEFAULT_MESH_SHAPE, make_mesh, maybe_initialize_distributed,
                                       mesh_axis_sizes, resolve_mesh_shape)
from penrose_jax.parallel.placement import (DEFAULT_DATA_AXES, abstract_with_shardings,
                                            batch_placement, batch_sharding, init_sharded,
                                            place_batch, replicated, shard_batch, shard_params,
                                            shardings_of, to_host)
from penrose_jax.parallel.rules import (DEFAULT_RULES, REPLICATED_RULES, describe_specs, find_rule,
                                        partition_specs_for, path_to_str, rules_from_config,
                                        rules_to_config, shardings_for, spec_for_shape)

__all__ = [
    "DEFAULT_DATA_AXES", "DEFAULT_MESH_SHAPE", "DEFAULT_RULES", "REPLICATED_RULES",
    "abstract_with_shardings", "batch_placement", "batch_sharding", "default_parallel_config",
    "describe_specs", "find_rule", "init_sharded", "make_mesh", "maybe_initialize_distributed",
    "mesh_axis_sizes", "partition_specs_for", "path_to_str", "place_batch", "replicated",
    "resolve_mesh_shape", "rules_from_config", "rules_to_config", "setup_for_job",
    "setup_from_config", "shard_batch", "shard_params", "shardings_for", "shardings_of",
    "spec_for_shape", "to_host",
]
