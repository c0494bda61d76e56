"""Single-device tests of penrose_jax.parallel: rules as data, mesh shapes, placement."""

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from penrose_jax import parallel
from penrose_jax.models import llama
from penrose_jax.models.config import tiny_config

CONFIG = tiny_config(hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2,
                     head_dim=16, vocab_size=128)
SIZES = {"data": 2, "fsdp": 4, "tensor": 2}


@flax.struct.dataclass
class TiledLeaf:
  """Compressed-leaf-like dataclass: stacked per-tile arrays with a leading tile axis."""

  u: jax.Array
  v: jax.Array
  values: jax.Array
  shape: tuple = flax.struct.field(pytree_node=False, default=(64, 64))


def _abstract_params(config=CONFIG):
  return jax.eval_shape(
      lambda: llama.LlamaModel(config).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))[
          "params"])


def test_default_rules_on_model_params():
  specs = parallel.partition_specs_for(_abstract_params(), SIZES)
  assert specs["embed"]["embedding"] == P("tensor", "fsdp")
  assert specs["layers_0"]["attn"]["q_proj"]["kernel"] == P("fsdp", "tensor")
  assert specs["layers_1"]["attn"]["k_proj"]["kernel"] == P("fsdp", "tensor")
  assert specs["layers_0"]["attn"]["o_proj"]["kernel"] == P("tensor", "fsdp")
  assert specs["layers_0"]["mlp"]["down_proj"]["kernel"] == P("tensor", "fsdp")
  assert specs["lm_head"]["kernel"] == P("fsdp", "tensor")
  assert specs["layers_0"]["attn_norm"]["scale"] == P()
  assert specs["final_norm"]["scale"] == P()


def test_bias_and_unmatched_are_replicated():
  tree = {"layers_0": {"attn": {"q_proj": {"bias": jax.ShapeDtypeStruct((64,), jnp.float32)}}},
          "something_else": jax.ShapeDtypeStruct((8, 8), jnp.float32)}
  specs = parallel.partition_specs_for(tree, SIZES)
  assert specs["layers_0"]["attn"]["q_proj"]["bias"] == P()
  assert specs["something_else"] == P()


def test_non_divisible_dimension_falls_back_to_replication():
  # 9 heads * 64 = 576 rows is fine for fsdp=4 but 9 * 8 = 72 columns is not for tensor=5.
  assert parallel.spec_for_shape("x/q_proj/kernel", (576, 72), ("fsdp", "tensor"),
                                 {"fsdp": 4, "tensor": 5}) == P("fsdp")
  assert parallel.spec_for_shape("x", (9, 576), ("fsdp", "tensor"),
                                 {"fsdp": 4, "tensor": 8}) == P(None, "tensor")
  assert parallel.spec_for_shape("x", (8, 6), (("data", "fsdp"),), SIZES) == P(("data", "fsdp"))
  assert parallel.spec_for_shape("x", (6, 6), (("data", "fsdp"),), SIZES) == P()


def test_missing_axis_dropped_and_spec_cut_to_rank():
  assert parallel.spec_for_shape("e", (128, 64), ("tensor", "fsdp"), {"data": 2, "fsdp": 4}) \
      == P(None, "fsdp")
  assert parallel.spec_for_shape("s", (), ("fsdp",), SIZES) == P()
  with pytest.raises(ValueError, match="used on two dimensions"):
    parallel.spec_for_shape("w", (8, 8), ("fsdp", "fsdp"), SIZES)


def test_compressed_leaf_fields_sharded_on_tile_axis():
  leaf = TiledLeaf(u=jax.ShapeDtypeStruct((8, 16, 4), jnp.float32),
                   v=jax.ShapeDtypeStruct((8, 32, 4), jnp.float32),
                   values=jax.ShapeDtypeStruct((8, 10), jnp.float32))
  tree = {"layers_0": {"attn": {"q_proj": {"kernel": leaf}}}}
  specs = parallel.partition_specs_for(tree, SIZES)
  got = specs["layers_0"]["attn"]["q_proj"]["kernel"]
  assert isinstance(got, TiledLeaf)
  assert (got.u, got.v, got.values) == (P("fsdp"), P("fsdp"), P("fsdp"))
  names = parallel.describe_specs(tree, SIZES)
  assert "layers_0/attn/q_proj/kernel/u" in names


def test_optimizer_state_paths_reuse_param_rules():
  params = _abstract_params()
  opt = jax.eval_shape(optax.adam(1e-3).init, params)
  specs = parallel.partition_specs_for(opt, SIZES)
  assert specs[0].mu["embed"]["embedding"] == P("tensor", "fsdp")
  assert specs[0].nu["layers_0"]["mlp"]["up_proj"]["kernel"] == P("fsdp", "tensor")
  assert specs[0].count == P()


def test_rules_round_trip_through_config():
  config = parallel.default_parallel_config()
  assert isinstance(config.sharding_rules, list)
  rules = parallel.rules_from_config(config.sharding_rules)
  assert rules == [(p, tuple(s)) for p, s in parallel.DEFAULT_RULES]
  custom = ml_collections.ConfigDict({"rules": [[r".*kernel", [["data", "fsdp"], None]]]})
  assert parallel.rules_from_config(custom.rules) == [(r".*kernel", (("data", "fsdp"), None))]
  assert parallel.find_rule("a/kernel", parallel.rules_from_config(custom.rules)) is not None
  with pytest.raises(ValueError, match="bad regex"):
    parallel.rules_from_config([["(", []]])
  with pytest.raises(ValueError, match="list of axes"):
    parallel.rules_from_config([[".*", "fsdp"]])


def test_first_matching_rule_wins():
  rules = [(r".*q_proj/kernel", ("tensor",)), (r".*/kernel", ("fsdp",))]
  assert parallel.find_rule("layers_3/attn/q_proj/kernel", rules)[1] == ("tensor",)
  assert parallel.find_rule("layers_3/attn/k_proj/kernel", rules)[1] == ("fsdp",)
  assert parallel.find_rule("layers_3/attn/q_proj/kernel/u", rules) is None


def test_resolve_mesh_shape_and_errors():
  assert parallel.resolve_mesh_shape({"data": -1, "fsdp": 2, "tensor": 2}, 16) == \
      {"data": 4, "fsdp": 2, "tensor": 2}
  with pytest.raises(ValueError, match=r"\{'data': 3, 'fsdp': 2\}.*jax.device_count\(\)=8"):
    parallel.resolve_mesh_shape({"data": 3, "fsdp": 2}, 8)
  with pytest.raises(ValueError, match="at most one axis may be -1"):
    parallel.resolve_mesh_shape({"data": -1, "fsdp": -1}, 8)
  with pytest.raises(ValueError, match="positive int or -1"):
    parallel.resolve_mesh_shape({"data": 0}, 8)
  # ConfigDict keys come back sorted; axes follow the canonical order instead.
  cd = ml_collections.ConfigDict()
  cd.tensor, cd.data, cd.fsdp = 2, -1, 1
  assert list(parallel.resolve_mesh_shape(cd, 8)) == ["data", "fsdp", "tensor"]


def test_make_mesh_single_device():
  mesh = parallel.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  assert dict(mesh.shape) == {"data": jax.device_count(), "fsdp": 1, "tensor": 1}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  with pytest.raises(ValueError, match="jax.device_count()"):
    parallel.make_mesh({"data": jax.device_count() + 1})


def test_distributed_flag_off_is_noop():
  assert parallel.maybe_initialize_distributed(False) is False


def _init(key):
  return llama.LlamaModel(CONFIG).init(key, jnp.zeros((1, 4), jnp.int32))["params"]


def test_single_device_forward_and_restore_tree():
  # Pinned to one device: under XLA_FLAGS=--xla_force_host_platform_device_count=8 the default
  # mesh spans 8 and this 2-row batch cannot split over them.
  mesh = parallel.make_mesh(parallel.default_parallel_config().mesh_shape,
                            devices=jax.devices()[:1])
  params = jax.jit(_init)(jax.random.PRNGKey(0))
  tokens = np.arange(24, dtype=np.int32).reshape(2, 12) % CONFIG.vocab_size
  fwd = jax.jit(lambda p, t: llama.forward(p, t, CONFIG).logits)
  ref = fwd(params, tokens)
  sp = parallel.shard_params(params, mesh)
  st = parallel.shard_batch(tokens, mesh)
  out = fwd(sp, st)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)
  abstract = parallel.abstract_with_shardings(params, mesh)
  leaf = abstract["layers_0"]["attn"]["q_proj"]["kernel"]
  assert isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding.mesh == mesh
  assert leaf.sharding.spec == P("fsdp", "tensor")


def test_init_sharded_matches_eval_shape():
  mesh = parallel.make_mesh(None)
  params, shardings = parallel.init_sharded(_init, mesh, None, jax.random.PRNGKey(0))
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(shardings)
  assert params["embed"]["embedding"].shape == (CONFIG.vocab_size, CONFIG.hidden_size)


def test_setup_from_config():
  config = ml_collections.ConfigDict({"parallel": parallel.default_parallel_config()})
  config.parallel.mesh_shape.fsdp = 1
  mesh, rules, data_axes = parallel.setup_from_config(config.parallel)
  assert dict(mesh.shape) == {"data": jax.device_count(), "fsdp": 1, "tensor": 1}
  assert rules[0] == ("embed/embedding", ("tensor", "fsdp"))
  assert data_axes == ("data", "fsdp")
