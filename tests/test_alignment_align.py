"""align() on a tiny Llama whose MLP kernels are replaced by truncated-SVD factored leaves."""

import dataclasses
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from penrose_jax.alignment import (AlignmentConfig, ObjectiveConfig, cache_teacher_outputs,
                                   make_alignment_loss)
from penrose_jax.alignment import align as align_module
from penrose_jax.alignment.align import align
from penrose_jax.alignment.teacher_cache import teacher_head_params
from penrose_jax.models import llama
from penrose_jax.models.config import tiny_config
from penrose_jax.training import OptimizerConfig, read_metrics


@flax.struct.dataclass
class _SVDLeaf:
  """Truncated SVD W ~ (U S) @ Vt, applied without forming W."""
  us: jax.Array
  vt: jax.Array

  @property
  def shape(self):
    return (self.us.shape[0], self.vt.shape[1])

  def matmul(self, x):
    return (x @ self.us) @ self.vt

  def materialize(self):
    return self.us @ self.vt

  def param_count(self):
    return self.us.size + self.vt.size


CFG = tiny_config()
CONFIG = AlignmentConfig(
    objective=ObjectiveConfig(weights=(("logit_kl", 1.0), ("hidden_kl", 0.5)), layers=(0, 1)),
    optimizer=OptimizerConfig(learning_rate=1e-2, warmup_steps=3, total_steps=24),
    trainable="compressed", num_steps=24, batch_size=4, log_every=2, eval_every=8,
    checkpoint_every=4, eval_batch_size=8, progress=False)


@pytest.fixture(scope="module")
def models():
  teacher = llama.init_params(CFG, seed=0)
  noise = np.random.default_rng(1)
  teacher = jax.tree_util.tree_map(  # init gives unit norms; perturb every parameter
      lambda x: jnp.asarray(x + 0.3 * noise.normal(size=x.shape).astype(np.float32)
                            * (1.0 if x.ndim > 1 else 0.5)), teacher)
  student = jax.tree_util.tree_map(lambda x: x, teacher)
  for name in ("gate_proj", "down_proj"):
    u, s, vt = np.linalg.svd(np.asarray(teacher["layers_0"]["mlp"][name]["kernel"]),
                             full_matrices=False)
    student["layers_0"]["mlp"][name]["kernel"] = _SVDLeaf(jnp.asarray(u[:, :6] * s[:6]),
                                                          jnp.asarray(vt[:6]))
  rng = np.random.default_rng(0)
  train = rng.integers(0, CFG.vocab_size, (32, 16)).astype(np.int32)
  val = rng.integers(0, CFG.vocab_size, (10, 16)).astype(np.int32)  # 10: last eval batch padded
  return teacher, student, train, val


def test_alignment_lowers_held_out_divergence(models, tmp_path):
  teacher, student, train, val = models
  aligned, report = align(student, teacher, CFG, train, val, CONFIG, str(tmp_path))
  assert report["logit_kl_after"] < 0.95 * report["logit_kl_before"]
  assert report["hidden_kl_after"] < report["hidden_kl_before"]
  assert report["num_steps"] == 24 and report["train_tokens"] == 24 * 4 * 16
  assert report["tokens_per_s"] > 0 and report["best_step"] in (8, 16, 24)
  assert report["trainable_params"] == 2 * 6 * (CFG.hidden_size + CFG.intermediate_size)
  leaf = aligned["layers_0"]["mlp"]["down_proj"]["kernel"]
  assert isinstance(leaf, _SVDLeaf)
  # Only the compressed leaves moved; the caller's params are still usable (not donated).
  np.testing.assert_array_equal(aligned["layers_1"]["attn"]["q_proj"]["kernel"],
                                student["layers_1"]["attn"]["q_proj"]["kernel"])
  assert not np.array_equal(leaf.us, student["layers_0"]["mlp"]["down_proj"]["kernel"].us)
  records = read_metrics(str(tmp_path / "metrics.jsonl"))
  assert [r["step"] for r in records] == list(range(2, 25, 2))
  assert {"loss", "logit_kl", "hidden_kl", "lr", "grad_norm", "tokens_per_s"} <= set(records[0])
  assert "eval/logit_kl" in records[3]  # step 8


def test_align_resume_after_kill_matches_uninterrupted(models, tmp_path, monkeypatch):
  teacher, student, train, val = models
  config = dataclasses.replace(CONFIG, num_steps=12)
  full_params, full_report = align(student, teacher, CFG, train, val, config,
                                   str(tmp_path / "full"))

  real_indices = align_module.batch_indices

  def dying_indices(step, *args):
    if step == 7:
      raise KeyboardInterrupt("simulated kill")
    return real_indices(step, *args)

  monkeypatch.setattr(align_module, "batch_indices", dying_indices)
  with pytest.raises(KeyboardInterrupt):
    align(student, teacher, CFG, train, val, config, str(tmp_path / "cut"))
  monkeypatch.setattr(align_module, "batch_indices", real_indices)
  cut_params, cut_report = align(student, teacher, CFG, train, val, config, str(tmp_path / "cut"))
  assert cut_report["start_step"] == 4
  assert (read_metrics(str(tmp_path / "full" / "metrics.jsonl"), drop_timing=True)
          == read_metrics(str(tmp_path / "cut" / "metrics.jsonl"), drop_timing=True))
  for a, b in zip(jax.tree_util.tree_leaves(full_params), jax.tree_util.tree_leaves(cut_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for key in ("logit_kl_after", "hidden_kl_after", "best_step", "returned_step"):
    assert full_report[key] == cut_report[key]


def test_teacher_cache_matches_on_the_fly_teacher(models, tmp_path):
  teacher, student, train, _ = models
  windows = train[:6]
  cache = cache_teacher_outputs(teacher, CFG, windows, str(tmp_path / "cache"), layers=(0, 1),
                                batch_size=4)
  assert cache.hidden.shape == (6, 2, 16, CFG.hidden_size)
  mtime = os.path.getmtime(tmp_path / "cache" / "hidden.npy")
  again = cache_teacher_outputs(teacher, CFG, windows, str(tmp_path / "cache"), layers=(0, 1))
  assert os.path.getmtime(tmp_path / "cache" / "hidden.npy") == mtime and again.layers == (0, 1)

  loss_fn = jax.jit(make_alignment_loss(CFG, CONFIG.objective))
  rows = np.array([4, 1, 5])
  plain = {"tokens": jnp.asarray(windows[rows])}
  cached = {**plain, **cache.batch(rows)}
  loss_a, terms_a = loss_fn(student, plain, jax.random.PRNGKey(0), teacher)
  loss_b, terms_b = loss_fn(student, cached, jax.random.PRNGKey(0),
                            teacher_head_params(teacher, CFG))
  np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)
  np.testing.assert_allclose(terms_a["logit_kl"], terms_b["logit_kl"], rtol=1e-5)
  with pytest.raises(ValueError, match="other windows"):
    align(student, teacher, CFG, train, train[:4], CONFIG, str(tmp_path / "run"),
          teacher_cache=cache)


def test_student_equal_to_teacher_has_zero_loss_and_gradient(models):
  teacher, student, train, _ = models
  objective = ObjectiveConfig(weights={"logit_kl": 1.0, "hidden_kl": 1.0, "mse": 1.0, "js": 1.0})
  assert objective.weights[0] == ("logit_kl", 1.0) and hash(objective)  # dicts become tuples
  loss_fn = make_alignment_loss(CFG, objective)
  batch = {"tokens": jnp.asarray(train[:2])}
  grad_fn = jax.jit(jax.value_and_grad(lambda p: loss_fn(p, batch, None, teacher)[0]))
  largest = lambda tree: max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(tree))
  loss, grads = grad_fn(teacher)
  assert abs(float(loss)) < 1e-5
  dense_student = jax.tree_util.tree_map(lambda x: x, teacher)
  dense_student["layers_0"]["mlp"]["down_proj"]["kernel"] = (
      student["layers_0"]["mlp"]["down_proj"]["kernel"].materialize())
  moved_loss, moved_grads = grad_fn(dense_student)
  assert float(moved_loss) > 1e-2
  assert largest(grads) < 1e-3 * largest(moved_grads)  # zero up to float32 rounding


def test_validation_perplexity_per_group_matches_independent_perplexity(models):
  from penrose_jax.evaluation import perplexity
  teacher, _, _, val = models
  groups = ["a"] * 7 + ["b"] * 3  # 7 + 3: both groups straddle a padded batch
  eval_fn = align_module.make_alignment_eval(teacher, CFG, val, CONFIG.objective, 4, groups)
  out = eval_fn(teacher)
  assert out["logit_kl"] == pytest.approx(0.0, abs=1e-6)  # the teacher is its own student
  for name, rows in (("a", val[:7]), ("b", val[7:])):
    expected = perplexity.perplexity(teacher, CFG, rows.tolist(), batch_size=4)["ppl"]
    assert out[f"ppl_{name}"] == pytest.approx(expected, rel=1e-4)
  assert out["ppl"] == pytest.approx(
      perplexity.perplexity(teacher, CFG, val.tolist(), batch_size=4)["ppl"], rel=1e-4)
  with pytest.raises(ValueError, match="groups has 2 names for 10 windows"):
    align_module.make_alignment_eval(teacher, CFG, val, CONFIG.objective, 4, ["a", "b"])
