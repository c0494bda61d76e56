"""Multi-device checks of penrose_jax.parallel, run on N fake CPU devices in a subprocess.

XLA_FLAGS=--xla_force_host_platform_device_count must be set before JAX initialises, so the
pytest process (single device) runs this file as a subprocess:

  python tests/multidevice_checks.py all          # or one check name, see CHECKS below

Prints one JSON line `{"device_count": 8, "checks": {name: {"ok": bool, ...numbers...}}}`.
Every check catches its own exceptions (recorded as `error`) so one failure does not hide the
rest; tests/test_parallel_multidevice.py asserts on the JSON.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import functools
import json
import logging
import tempfile
import time
import traceback
from typing import Any, Callable

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import PartitionSpec as P

from penrose_jax import parallel
from penrose_jax.models import llama
from penrose_jax.models.config import tiny_config

CONFIG = tiny_config(hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2,
                     head_dim=16, vocab_size=128)
TOL = 1e-5


@flax.struct.dataclass
class RowTiledLowRank:
  """Compressed-leaf stand-in: row tile i of W is u_i v_i^T; u (g, h, r), v (g, w, r)."""

  u: jax.Array
  v: jax.Array
  shape: tuple[int, int] = flax.struct.field(pytree_node=False)

  def matmul(self, x: jax.Array) -> jax.Array:
    g, h, _ = self.u.shape
    xt = x.reshape(x.shape[:-1] + (g, h))
    return jnp.einsum("...gr,gwr->...w", jnp.einsum("...gh,ghr->...gr", xt, self.u), self.v)

  def materialize(self) -> jax.Array:
    return jnp.einsum("ghr,gwr->ghw", self.u, self.v).reshape(self.shape)

  def param_count(self) -> int:
    return int(self.u.size + self.v.size)

  def nbytes(self) -> int:
    return int(self.u.nbytes + self.v.nbytes)


def _tokens(batch: int = 8, length: int = 12, vocab: int = CONFIG.vocab_size) -> np.ndarray:
  return np.asarray(jax.random.randint(jax.random.PRNGKey(1), (batch, length), 0, vocab),
                    np.int32)


def _jit_init(config, seed: int) -> Any:
  """Params like llama.init_params, but jitted (eager Flax init takes seconds on CPU)."""
  init = lambda k: llama.LlamaModel(config).init(k, jnp.zeros((1, 4), jnp.int32))["params"]
  return _host(jax.jit(init)(jax.random.PRNGKey(seed)))


@functools.lru_cache(maxsize=None)
def _tiny_params(seed: int = 0) -> Any:
  return _jit_init(CONFIG, seed)


def _host(tree: Any) -> Any:
  return jax.tree_util.tree_map(np.asarray, tree)


def _max_diff(a: Any, b: Any) -> float:
  diffs = jax.tree_util.tree_map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))),
                                 a, b)
  return max(jax.tree_util.tree_leaves(diffs), default=0.0)


def _single_device_forward(params: Any, tokens: np.ndarray, config=CONFIG) -> np.ndarray:
  dev = jax.devices()[0]
  p = jax.device_put(params, dev)
  return np.asarray(jax.jit(lambda p, t: llama.forward(p, t, config).logits)(
      p, jax.device_put(tokens, dev)))


def _sharded_forward(params: Any, tokens: np.ndarray, mesh, rules=None, config=CONFIG):
  sp = parallel.shard_params(params, mesh, rules)
  st = parallel.shard_batch(tokens, mesh)
  fn = jax.jit(lambda p, t: llama.forward(p, t, config).logits,
               out_shardings=parallel.batch_sharding(mesh))
  return sp, st, fn(sp, st)


def check_forward() -> dict:
  """(a) sharded (2x2x2 data/fsdp/tensor) vs single-device logits of the tiny model."""
  params = _tiny_params(0)
  tokens = _tokens()
  ref = _single_device_forward(params, tokens)
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sp, st, logits = _sharded_forward(params, tokens, mesh)
  q = sp["layers_0"]["attn"]["q_proj"]["kernel"]
  o = sp["layers_0"]["attn"]["o_proj"]["kernel"]
  diff = float(np.max(np.abs(np.asarray(logits) - ref)))
  return {
      "ok": diff <= TOL and q.sharding.spec == P("fsdp", "tensor")
            and o.sharding.spec == P("tensor", "fsdp")
            and st.sharding.spec == P(("data", "fsdp"))
            and q.addressable_shards[0].data.shape == (32, 32),
      "max_abs_diff": diff, "q_proj_spec": str(q.sharding.spec),
      "q_proj_shard_shape": list(q.addressable_shards[0].data.shape),
      "tokens_spec": str(st.sharding.spec), "logits_spec": str(logits.sharding.spec),
  }


def check_awkward_sizes() -> dict:
  """Sizes not divisible by the mesh (9 heads, vocab 99) fall back to replication, still match."""
  cfg = tiny_config(vocab_size=99, hidden_size=36, intermediate_size=60, num_heads=9,
                    num_kv_heads=3, head_dim=4, num_layers=1)
  params = _jit_init(cfg, 3)
  tokens = _tokens(vocab=99)
  ref = _single_device_forward(params, tokens, cfg)
  mesh = parallel.make_mesh({"data": 2, "fsdp": 4})
  sp, _, logits = _sharded_forward(params, tokens, mesh, config=cfg)
  diff = float(np.max(np.abs(np.asarray(logits) - ref)))
  q_spec = sp["layers_0"]["attn"]["q_proj"]["kernel"].sharding.spec  # (36, 36): fsdp fits
  e_spec = sp["embed"]["embedding"].sharding.spec  # (99, 36): tensor absent, 36 % 4 == 0
  g_spec = sp["layers_0"]["mlp"]["gate_proj"]["kernel"].sharding.spec  # (36, 60)
  mesh8 = parallel.make_mesh({"data": 1, "fsdp": 8})
  k8 = parallel.shardings_for(params, mesh8)["layers_0"]["attn"]["k_proj"]["kernel"].spec
  return {"ok": diff <= TOL and q_spec == P("fsdp") and e_spec == P(None, "fsdp")
                and k8 == P(),
          "max_abs_diff": diff, "q_proj_spec": str(q_spec), "embed_spec": str(e_spec),
          "gate_spec": str(g_spec), "k_proj_spec_fsdp8_36_not_divisible": str(k8)}


def _compress(params: Any, name: str, layer: str, tiles: int, rank: int) -> Any:
  """Replaces one dense kernel by a RowTiledLowRank leaf fitted per row tile (truncated SVD)."""
  group, proj = name.split("/")
  w = np.asarray(params[layer][group][proj]["kernel"])
  h = w.shape[0] // tiles
  us, vs = [], []
  for i in range(tiles):
    uu, s, vt = np.linalg.svd(w[i * h:(i + 1) * h], full_matrices=False)
    us.append(uu[:, :rank] * np.sqrt(s[:rank]))
    vs.append(vt[:rank].T * np.sqrt(s[:rank]))
  leaf = RowTiledLowRank(np.stack(us).astype(np.float32), np.stack(vs).astype(np.float32),
                         tuple(w.shape))
  params = jax.tree_util.tree_map(lambda x: x, params)
  params[layer][group][proj]["kernel"] = leaf
  return params


def check_compressed() -> dict:
  """A flax.struct compressed leaf is split along its leading tile axis over 'fsdp'."""
  params = _tiny_params(0)
  params = _compress(params, "attn/q_proj", "layers_0", tiles=8, rank=4)
  params = _compress(params, "mlp/down_proj", "layers_1", tiles=4, rank=3)
  tokens = _tokens()
  ref = _single_device_forward(params, tokens)
  mesh = parallel.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
  sp, _, logits = _sharded_forward(params, tokens, mesh)
  leaf = sp["layers_0"]["attn"]["q_proj"]["kernel"]
  down = sp["layers_1"]["mlp"]["down_proj"]["kernel"]
  diff = float(np.max(np.abs(np.asarray(logits) - ref)))
  return {"ok": (diff <= TOL and isinstance(leaf, RowTiledLowRank)
                 and leaf.u.sharding.spec == P("fsdp") and leaf.v.sharding.spec == P("fsdp")
                 and leaf.u.addressable_shards[0].data.shape == (2, 8, 4)
                 and down.u.sharding.spec == P("fsdp")),
          "max_abs_diff": diff, "u_spec": str(leaf.u.sharding.spec),
          "u_shard_shape": list(leaf.u.addressable_shards[0].data.shape),
          "paths": sorted(k for k in parallel.describe_specs(params, mesh) if "kernel/" in k)}


def _loss(params, tokens):
  return jnp.mean(llama.forward(params, tokens, CONFIG).logits ** 2)


def check_train_step() -> dict:
  """(b) + (d): SGD-with-momentum train step, sharded (2x2x2, params from init_sharded, donated
  state) vs single device for the first step; then 3 more steps must reuse the one trace."""
  params_host = _tiny_params(0)
  tokens = _tokens()
  tx = optax.sgd(0.5, momentum=0.9)

  def step(p, o, t):
    loss, grads = jax.value_and_grad(_loss)(p, t)
    updates, o = tx.update(grads, o, p)
    return optax.apply_updates(p, updates), o, loss

  dev = jax.devices()[0]
  p1 = jax.device_put(params_host, dev)
  ref_p, _, ref_loss = jax.jit(step)(p1, tx.init(p1), jax.device_put(tokens, dev))
  ref_p = _host(ref_p)

  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  init_fn = lambda k: llama.LlamaModel(CONFIG).init(k, jnp.zeros((1, 4), jnp.int32))["params"]
  params, p_shard = parallel.init_sharded(init_fn, mesh, None, jax.random.PRNGKey(0))
  init_diff = _max_diff(params, params_host)
  o_shard = parallel.shardings_for(jax.eval_shape(tx.init, params), mesh)
  opt_state = jax.jit(tx.init, out_shardings=o_shard)(params)
  mu_spec = opt_state[0].trace["layers_0"]["attn"]["q_proj"]["kernel"].sharding.spec

  jstep = jax.jit(chex.assert_max_traces(step, n=1),
                  in_shardings=(p_shard, o_shard, parallel.batch_sharding(mesh)),
                  out_shardings=(p_shard, o_shard, parallel.replicated(mesh)),
                  donate_argnums=(0, 1))
  params, opt_state, loss = jstep(params, opt_state, parallel.shard_batch(tokens, mesh))
  diff = _max_diff(params, ref_p)
  moved = _max_diff(params, params_host)
  loss_diff = abs(float(loss) - float(ref_loss))
  kept = params["layers_0"]["mlp"]["down_proj"]["kernel"].sharding.spec
  losses = [float(loss)]
  start = time.perf_counter()
  for i in range(1, 4):  # chex raises on a second trace
    batch = parallel.shard_batch((tokens + i) % CONFIG.vocab_size, mesh)
    params, opt_state, loss = jstep(params, opt_state, batch)
    losses.append(float(loss))
  elapsed = time.perf_counter() - start
  ok = (diff <= TOL and loss_diff <= TOL and moved > 1e-4 and init_diff <= TOL
        and mu_spec == P("fsdp", "tensor") and kept == P("tensor", "fsdp")
        and jstep._cache_size() == 1 and all(np.isfinite(losses)))
  return {"ok": ok, "max_abs_param_diff": diff, "loss": float(losses[0]),
          "ref_loss": float(ref_loss), "param_change": moved, "kept_spec": str(kept),
          "steps": 4, "jit_cache_size": jstep._cache_size(), "losses": losses,
          "init_sharded_vs_jit_init_diff": init_diff, "momentum_spec": str(mu_spec),
          "wall_s_3_more_steps": round(elapsed, 3)}


def check_checkpoint() -> dict:
  """(c) orbax save from a 2x4 ('data','fsdp') mesh, restore onto 8x1 and 1x8 meshes."""
  params = _tiny_params(0)
  params = _compress(params, "attn/q_proj", "layers_0", tiles=8, rank=4)
  mesh_a = parallel.make_mesh({"data": 2, "fsdp": 4})
  sp = parallel.shard_params(params, mesh_a)
  out: dict = {"ok": True}
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "ckpt")
    ckptr = ocp.Checkpointer(ocp.StandardCheckpointHandler())
    ckptr.save(path, args=ocp.args.StandardSave(sp))
    for label, shape in (("8x1", {"data": 8, "fsdp": 1}), ("1x8", {"data": 1, "fsdp": 8})):
      mesh_b = parallel.make_mesh(shape)
      target = parallel.abstract_with_shardings(params, mesh_b)
      restored = ckptr.restore(path, args=ocp.args.StandardRestore(target))
      diff = _max_diff(restored, params)
      same_sharding = all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(
          lambda r, t: r.sharding.is_equivalent_to(t.sharding, r.ndim), restored, target)))
      on_mesh_b = all(r.sharding.mesh.shape == mesh_b.shape
                      for r in jax.tree_util.tree_leaves(restored))
      kind = type(restored["layers_0"]["attn"]["q_proj"]["kernel"]).__name__
      ok = diff == 0.0 and same_sharding and on_mesh_b and kind == "RowTiledLowRank"
      out[label] = {"max_abs_diff": diff, "shardings_match": same_sharding,
                    "q_leaf_type": kind,
                    "u_spec": str(restored["layers_0"]["attn"]["q_proj"]["kernel"].u.sharding.spec),
                    "embed_spec": str(restored["embed"]["embedding"].sharding.spec)}
      out["ok"] = out["ok"] and ok
  return out


def check_mesh_validation() -> dict:
  """(e) clear errors for shapes that do not fit 8 devices; -1 fills the rest."""
  messages = {}
  for label, shape in (("3x2", {"data": 3, "fsdp": 2}), ("free_3", {"data": -1, "fsdp": 3}),
                       ("two_free", {"data": -1, "fsdp": -1})):
    try:
      parallel.make_mesh(shape)
      messages[label] = None
    except ValueError as e:
      messages[label] = str(e)
  filled = dict(parallel.make_mesh({"data": -1, "fsdp": 2, "tensor": 2}).shape)
  sub = parallel.make_mesh({"data": -1, "fsdp": 2}, devices=jax.devices()[4:])
  sub_ok = (dict(sub.shape) == {"data": 2, "fsdp": 2}
            and sorted(d.id for d in sub.devices.flat) == [4, 5, 6, 7])
  ok = (all(m is not None and "jax.device_count()=8" in m for m in messages.values())
        and str({"data": 3, "fsdp": 2}) in messages["3x2"]
        and filled == {"data": 2, "fsdp": 2, "tensor": 2} and sub_ok)
  bad_batch = None
  try:
    parallel.shard_batch(np.zeros((6, 4), np.int32), parallel.make_mesh({"data": 8}))
  except ValueError as e:
    bad_batch = str(e)
  ok = ok and bad_batch is not None and "not divisible" in bad_batch
  return {"ok": ok, "messages": messages, "filled": filled, "bad_batch": bad_batch}


def _parallel_block(mesh_shape: dict, sharded: bool, data_axes=("data", "fsdp")):
  """A config.parallel block: the default rules over `mesh_shape`, or (sharded=False) every
  param and batch replicated, which computes exactly what one device computes."""
  block = parallel.default_parallel_config(mesh_shape)
  if not sharded:
    block.sharding_rules = parallel.rules_to_config(parallel.REPLICATED_RULES)
    block.data_axes = []
  else:
    block.data_axes = list(data_axes)
  return block


def _quick_compress_config(block):
  from configs import compress as compress_config  # pylint: disable=g-import-not-at-top
  config = compress_config.get_config("quick")
  config.tiling_pictures = ""
  config.eval.hidden_kl_windows = 0  # ppl only: keeps the check's compile count down
  config.parallel = block
  return config


def _quick_align_config(student: str, block):
  from configs import align as align_config  # pylint: disable=g-import-not-at-top
  config = align_config.get_config("quick")
  config.student, config.teacher = student, "tiny"
  config.num_steps, config.eval_every, config.checkpoint_every = 1, 0, 0
  config.num_train_windows = config.num_val_windows = 2
  config.eval.text_sets = {}  # no perplexity passes: the first-step loss is what is compared
  config.parallel = block
  return config


def check_jobs() -> dict:
  """The compress and align jobs' quick runs on a {'data': 2, 'fsdp': 4} mesh (params by the
  default rules, batches over the data axes) vs the same runs with everything replicated
  (= the single-device computation): per-matrix rel_fro_error, ppl, first-step align loss."""
  from penrose_jax.jobs import align as align_job  # pylint: disable=g-import-not-at-top
  from penrose_jax.jobs import compress as compress_job  # pylint: disable=g-import-not-at-top
  from penrose_jax.io import model_registry  # pylint: disable=g-import-not-at-top
  from penrose_jax.training.metrics_log import read_metrics  # pylint: disable=g-import-not-at-top
  tol = 1e-4
  out: dict = {}
  with tempfile.TemporaryDirectory() as tmp:
    reports, losses, specs = {}, {}, {}
    for label, block in (("single", _parallel_block({"data": 8}, sharded=False)),
                         ("mesh_2x4", _parallel_block({"data": 2, "fsdp": 4}, sharded=True))):
      reports[label] = compress_job.run(_quick_compress_config(block), f"{tmp}/c_{label}")
      mesh, rules, _ = parallel.setup_from_config(block)
      dense = model_registry.load("tiny", cache_dir=f"{tmp}/c_{label}/model_cache").params
      specs[label] = {k: v for k, v in parallel.describe_specs(dense, mesh, rules).items()
                      if k.startswith(("embed/", "layers_0/attn/q_proj", "layers_0/mlp/"))}
      # Align batches have 2 rows: split them over 'data' (over data x fsdp = 8 they would
      # fall back to replication).
      align_block = (block if label == "single" else
                     _parallel_block({"data": 2, "fsdp": 4}, sharded=True, data_axes=("data",)))
      align_job.run(_quick_align_config(f"{tmp}/c_single/model", align_block),
                    f"{tmp}/a_{label}")
      first = [r for r in read_metrics(f"{tmp}/a_{label}/train/metrics.jsonl") if r["step"] == 1]
      losses[label] = float(first[0]["loss"])
    rows = {l: {r["name"]: r["rel_fro_error"] for r in reports[l]["matrices"]} for l in reports}
    rel = lambda a, b: abs(a - b) / max(abs(b), 1e-12)
    fro_diff = max(rel(rows["mesh_2x4"][k], v) for k, v in rows["single"].items())
    ppl_diff = max(rel(reports["mesh_2x4"][k], reports["single"][k])
                   for k in ("ppl_dense", "ppl_compressed"))
    # The first-step KL is ~1e-4 on the tiny model, a difference of O(1) log-probs: its float32
    # rounding is absolute (~1e-8), so it is compared on the scale max(|loss|, 1e-2).
    loss_diff = (abs(losses["mesh_2x4"] - losses["single"])
                 / max(abs(losses["single"]), 1e-2))
    out.update({
        "ok": (set(rows["single"]) == set(rows["mesh_2x4"]) and len(rows["single"]) > 0
               and fro_diff <= tol and ppl_diff <= tol and loss_diff <= tol),
        "tolerance_rel": tol, "matrices": len(rows["single"]),
        "max_rel_diff_rel_fro_error": fro_diff, "max_rel_diff_ppl": ppl_diff,
        "ppl_compressed": [reports[l]["ppl_compressed"] for l in ("single", "mesh_2x4")],
        "align_first_loss": [losses[l] for l in ("single", "mesh_2x4")],
        "rel_diff_align_first_loss": loss_diff, "specs": specs,
    })
  return out


CHECKS: dict[str, Callable[[], dict]] = {
    "forward": check_forward,
    "awkward_sizes": check_awkward_sizes,
    "compressed": check_compressed,
    "train_step": check_train_step,
    "checkpoint": check_checkpoint,
    "mesh_validation": check_mesh_validation,
    "jobs": check_jobs,
}


def main(argv: list[str]) -> int:
  """Runs the named checks (default all) and prints the JSON result line."""
  logging.basicConfig(level=logging.ERROR)
  names = argv[1:] or ["all"]
  if names == ["all"]:
    names = list(CHECKS)
  results = {}
  for name in names:
    start = time.perf_counter()
    try:
      results[name] = CHECKS[name]()
    except Exception as e:  # pylint: disable=broad-except
      results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}",
                       "traceback": traceback.format_exc()[-3000:]}
    results[name]["wall_s"] = round(time.perf_counter() - start, 2)
  print(json.dumps({"device_count": jax.device_count(), "checks": results}))
  return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv))
