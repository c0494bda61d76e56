"""run_training: resume after a kill, NaN guard, checkpoints with custom leaves, one compile."""


import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from penrose_jax.training import (NonFiniteLossError, OptimizerConfig, TrainCheckpoints,
                                  init_train_state, make_optimizer, make_schedule,
                                  make_train_step, read_metrics, run_training, trainable_mask)
from penrose_jax.training.data_order import batch_indices
from penrose_jax.training.metrics_log import MetricsLog


@flax.struct.dataclass
class _Leaf:
  """Compressed-leaf stand-in: W = A @ B, an int index array and a static field."""
  a: jax.Array
  b: jax.Array
  index: jax.Array
  tag: str = flax.struct.field(pytree_node=False, default="")

  @property
  def shape(self):
    return (self.a.shape[0], self.b.shape[1])

  def matmul(self, x):
    return (x @ self.a) @ self.b

  def materialize(self):
    return self.a @ self.b


D = 6
OPT_CONFIG = OptimizerConfig(learning_rate=0.1, warmup_steps=2, total_steps=12)
_rng = np.random.default_rng(1)
TARGET = (_rng.normal(size=(D, 2)) @ _rng.normal(size=(2, D)) / 2).astype(np.float32)  # rank 2


def _params():
  key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
  return {"w": jnp.zeros((D, D)), "norm": {"scale": jnp.ones((D,))},
          "k": _Leaf(0.1 * jax.random.normal(key_a, (D, 2)), 0.1 * jax.random.normal(key_b, (2, D)),
                     jnp.arange(3, dtype=jnp.int32), tag="rank2")}


def _loss(params, batch, rng, constants):
  pred = params["k"].matmul(batch["x"]) * params["norm"]["scale"]
  noise = 1e-3 * jax.random.normal(rng, pred.shape)  # exercises per-step randomness
  mse = jnp.mean((pred + noise - batch["x"] @ TARGET) ** 2)
  loss = jnp.where(batch["poison"], jnp.nan, mse)
  return loss, {"mse": mse}


def _batch(i, poison_at=-1):
  x = np.random.default_rng([7, i]).normal(size=(4, D)).astype(np.float32)
  return {"x": x, "poison": np.bool_(i == poison_at), "tokens": np.zeros((4, 3), np.int32)}


def _eval(params):
  x = np.random.default_rng(99).normal(size=(16, D)).astype(np.float32)
  return {"mse": jnp.mean((params["k"].matmul(x) * params["norm"]["scale"] - x @ TARGET) ** 2)}


@pytest.fixture(scope="module")
def setup():
  params = _params()
  mask = trainable_mask(params, "compressed+norms")
  opt = make_optimizer(OPT_CONFIG)
  step = make_train_step(_loss, opt, mask, make_schedule(OPT_CONFIG), max_traces=1)
  return params, mask, opt, step


def _run(setup, workdir, num_steps, batch_fn=_batch, **kw):
  params, mask, opt, step = setup
  kw = {"eval_fn": _eval, "log_every": 2, "eval_every": 4, "checkpoint_every": 3,
        "best_metric": "mse", "progress": False, **kw}
  return run_training(init_train_state(params, opt, mask, seed=3), step, batch_fn, num_steps,
                      str(workdir), **kw)


def _assert_same_params(a, b):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_after_kill_reproduces_uninterrupted_run(setup, tmp_path):
  full = _run(setup, tmp_path / "full", 12)
  assert full.final_step == 12
  assert full.last_eval["mse"] < 0.7 * float(_eval(_params())["mse"])

  class Killed(Exception):
    pass

  def dying_batch(i):
    if i == 7:
      raise Killed()
    return _batch(i)

  with pytest.raises(Killed):
    _run(setup, tmp_path / "cut", 12, batch_fn=dying_batch)
  # Killed after update 7: checkpoints at 3 and 6, metrics lines up to step 6 on disk.
  assert TrainCheckpoints(str(tmp_path / "cut" / "checkpoints")).latest_step() == 6
  resumed = _run(setup, tmp_path / "cut", 12)
  assert resumed.start_step == 6
  assert (read_metrics(str(tmp_path / "full" / "metrics.jsonl"), drop_timing=True)
          == read_metrics(str(tmp_path / "cut" / "metrics.jsonl"), drop_timing=True))
  _assert_same_params(full.state.params, resumed.state.params)
  leaf = resumed.state.params["k"]
  assert isinstance(leaf, _Leaf) and leaf.tag == "rank2"
  np.testing.assert_array_equal(leaf.index, np.arange(3))
  # Best-by-validation checkpoint kept next to the latest ones.
  assert resumed.best_step == full.best_step and resumed.best_step in (4, 8, 12)
  assert resumed.best_eval == full.best_eval
  # A finished run restarted does nothing and returns the final state.
  again = _run(setup, tmp_path / "cut", 12)
  assert again.start_step == 12 and again.train_tokens == 0


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(setup, tmp_path):
  with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 5 \(batch_fn\(4\)\)"
                     r".*last good checkpoint is step 3 at") as info:
    _run(setup, tmp_path, 12, batch_fn=lambda i: _batch(i, poison_at=4), eval_fn=None,
         best_metric=None)
  assert info.value.last_good_checkpoint_step == 3
  store = TrainCheckpoints(info.value.checkpoint_directory)
  params, mask, opt, _ = setup
  target = jax.eval_shape(lambda: init_train_state(params, opt, mask, seed=3))
  state, meta = store.restore(3, target)
  assert int(state.step) == 3 and meta["data_position"] == 3
  assert isinstance(state.params["k"], _Leaf) and state.params["k"].tag == "rank2"
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(state))
  logged = [r["step"] for r in read_metrics(str(tmp_path / "metrics.jsonl"))]
  assert logged == [2, 4]


def test_guarded_step_returns_old_state_on_nan(setup):
  params, mask, opt, step = setup
  state = init_train_state(params, opt, mask)
  before = jax.device_get(state)
  new_state, metrics, finite = step(state, _batch(0, poison_at=0))
  assert not bool(finite) and np.isnan(float(metrics["loss"]))
  _assert_same_params(before, new_state)


def test_step_compiles_once_across_many_steps(setup, tmp_path):
  params, mask, opt, _ = setup
  counted = make_train_step(_loss, opt, mask, max_traces=1)
  state = init_train_state(params, opt, mask)
  for i in range(6):
    state, _, _ = counted(state, _batch(i))
  assert int(state.step) == 6
  with pytest.raises(AssertionError):  # a new batch shape would retrace: the guard catches it
    bigger = {**_batch(0), "x": np.zeros((8, D), np.float32)}
    counted(state, bigger)
  chex.clear_trace_counter()


def test_batch_indices_deterministic_epochs():
  a = [batch_indices(i, 3, 7, seed=5) for i in range(7)]
  b = [batch_indices(i, 3, 7, seed=5) for i in reversed(range(7))][::-1]
  np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
  stream = np.concatenate(a)  # 21 = three epochs, each a permutation of range(7)
  for epoch in range(3):
    assert sorted(stream[7 * epoch:7 * epoch + 7]) == list(range(7))
  assert not np.array_equal(stream[:7], stream[7:14])
  assert not np.array_equal(stream, np.concatenate([batch_indices(i, 3, 7, 6) for i in range(7)]))


def test_metrics_log_truncation(tmp_path):
  log = MetricsLog(str(tmp_path / "m.jsonl"))
  for step in (1, 2, 3, 4):
    log.append({"step": step, "loss": np.float32(step) / 2, "bad": float("nan")})
  with open(log.path, "a") as f:
    f.write('{"step": 5, "lo')  # torn line from a kill mid-write
  assert log.logged_at(3)["loss"] == 1.5
  assert log.logged_at(5) is None and MetricsLog(str(tmp_path / "none.jsonl")).logged_at(1) is None
  assert log.truncate_after(2) == 2
  assert [r["step"] for r in read_metrics(log.path)] == [1, 2]
  assert read_metrics(log.path)[0] == {"step": 1, "loss": 0.5, "bad": "nan"}
  assert MetricsLog(str(tmp_path / "none.jsonl")).truncate_after(0) == 0


def test_read_metrics_skips_line_torn_by_kill(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
  assert [r["step"] for r in read_metrics(str(path))] == [1, 2]
  assert MetricsLog(str(path)).logged_at(3) is None
