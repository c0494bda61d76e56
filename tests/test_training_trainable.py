"""Trainable-subset selection on a tiny Llama with a compressed leaf; gradients flow only there."""

import flax
import jax
import jax.numpy as jnp
import numpy as np

from penrose_jax.models import llama
from penrose_jax.models.config import tiny_config
from penrose_jax.training import (OptimizerConfig, describe_trainable, init_train_state,
                                  make_optimizer, make_train_step, merge, partition,
                                  trainable_mask)


@flax.struct.dataclass
class _IndexedFactoredLeaf:
  """W = A @ B with an integer index array that must never be trained."""
  a: jax.Array
  b: jax.Array
  index: jax.Array
  rank: int = flax.struct.field(pytree_node=False, default=0)

  @property
  def shape(self):
    return (self.a.shape[0], self.b.shape[1])

  def matmul(self, x):
    return (x @ self.a) @ self.b

  def materialize(self):
    return self.a @ self.b

  def param_count(self):
    return self.a.size + self.b.size + self.index.size


CFG = tiny_config()  # D=32, F=64, L=2, H=4, KV=2, hd=8, V=96, untied head
RANK = 4


def _model():
  params = llama.init_params(CFG)
  w = np.asarray(params["layers_1"]["mlp"]["down_proj"]["kernel"])
  u, s, vt = np.linalg.svd(w, full_matrices=False)
  params["layers_1"]["mlp"]["down_proj"]["kernel"] = _IndexedFactoredLeaf(
      jnp.asarray(u[:, :RANK] * s[:RANK]), jnp.asarray(vt[:RANK]), jnp.arange(5, dtype=jnp.int32),
      rank=RANK)
  return params


def test_selector_counts():
  params = _model()
  d, f, v, layers = CFG.hidden_size, CFG.intermediate_size, CFG.vocab_size, CFG.num_layers
  q, kv = CFG.num_heads * CFG.head_dim, CFG.num_kv_heads * CFG.head_dim
  leaf = f * RANK + RANK * d
  norms = d * (2 * layers + 1)
  dense_layer = d * q * 2 + d * kv * 2 + 3 * d * f
  all_float = v * d * 2 + norms + layers * dense_layer - f * d + leaf
  expected = {"compressed": leaf, "compressed+norms": leaf + norms, "all": all_float,
              r"attn/(q|k)_proj": layers * d * (q + kv), "none": 0}
  for selector, count in expected.items():
    info = describe_trainable(params, trainable_mask(params, selector))
    assert info["trainable_params"] == count, selector
    assert info["trainable_params"] + info["frozen_params"] == all_float + 5  # + int index
  paths = describe_trainable(params, trainable_mask(params, "compressed"))["trainable_paths"]
  assert paths == ["layers_1/mlp/down_proj/kernel/a", "layers_1/mlp/down_proj/kernel/b"]
  # Integer arrays are never selected, even when a regex names them.
  assert describe_trainable(params, trainable_mask(params, "index"))["trainable_params"] == 0


def test_partition_merge_roundtrip_keeps_leaf_class():
  params = _model()
  trainable, frozen = partition(params, trainable_mask(params, "compressed+norms"))
  assert trainable["layers_0"]["attn"]["q_proj"]["kernel"] is None
  back = merge(trainable, frozen)
  assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
  leaf = back["layers_1"]["mlp"]["down_proj"]["kernel"]
  assert isinstance(leaf, _IndexedFactoredLeaf) and leaf.rank == RANK


def test_gradients_and_updates_touch_only_selected_arrays():
  params = _model()
  mask = trainable_mask(params, "compressed")
  opt = make_optimizer(OptimizerConfig(learning_rate=1e-2, total_steps=10, weight_decay=0.1))
  state = init_train_state(params, opt, mask)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, CFG.vocab_size, (2, 8)), jnp.int32)

  def loss_fn(p, batch, rng, constants):
    logits = llama.forward(p, batch, CFG).logits
    return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0]), {}

  step = make_train_step(loss_fn, opt, mask, donate=False)
  new_state, metrics, finite = step(state, tokens)
  assert bool(finite) and int(new_state.step) == 1
  # Optimizer moments exist only for the trainable arrays.
  moments = [x for x in jax.tree_util.tree_leaves(new_state.opt_state) if x.ndim > 0]
  assert sum(x.size for x in moments) == 2 * (CFG.intermediate_size + CFG.hidden_size) * RANK
  flat_old = jax.tree_util.tree_flatten_with_path(params)[0]
  flat_new = jax.tree_util.tree_leaves(new_state.params)
  for (path, old), new in zip(flat_old, flat_new):
    name = jax.tree_util.keystr(path)
    changed = not np.array_equal(np.asarray(old), np.asarray(new))
    assert changed == (name.endswith(".a") or name.endswith(".b")), name
