"""NaN / inf guards in every training loop (align and qa_tune both use training.run_training):
an exploding run stops with NonFiniteLossError naming the step, and the last good checkpoint
(finite params) stays on disk; no report or model is written."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from configs import qa_tune as qa_tune_config
from penrose_jax.alignment import align as align_module
from penrose_jax.jobs import align, qa_tune
from penrose_jax.training import NonFiniteLossError, TrainCheckpoints
from tests.reliability.conftest import align_quick


def _assert_stopped_with_good_checkpoint(info, workdir, checkpoint_dir):
  err = info.value
  assert err.last_good_checkpoint_step is not None and err.last_good_checkpoint_step < err.step
  assert f"non-finite loss at step {err.step}" in str(err)
  assert f"last good checkpoint is step {err.last_good_checkpoint_step}" in str(err)
  assert err.checkpoint_directory == str(checkpoint_dir)
  store = TrainCheckpoints(str(checkpoint_dir))
  assert err.last_good_checkpoint_step in store.all_steps()
  assert store.read_meta(err.last_good_checkpoint_step)["data_position"] == (
      err.last_good_checkpoint_step)
  store.close()
  assert not (workdir / "report.json").exists() and not (workdir / "model").exists()


def test_qa_tune_exploding_learning_rate(tmp_path, tiny_model_dir):
  """lr 1e30: the warmup's first update is 0, the second blows the LoRA factors up, so the
  loss of section 2's first update is non-finite; section 1's end checkpoint is the good one."""
  config = qa_tune_config.get_config("quick")
  config.model = str(tiny_model_dir)
  config.max_documents = 1
  config.qa_sources = "rule"
  config.learning_rate = 1e30
  config.clip_norm = 0.0
  config.eval.enabled = False
  config.trace_questions = 0
  with pytest.raises(NonFiniteLossError) as info:
    qa_tune.run(config, tmp_path)
  _assert_stopped_with_good_checkpoint(info, tmp_path, tmp_path / "checkpoints")


def test_align_poisoned_params_mid_run(tmp_path, compress_reference, monkeypatch):
  """A learning rate of 1e30 does not overflow the KL objective (norms rescale everything), so
  the 4th update is fed params holding a NaN; the guarded step must refuse it."""
  config = align_quick(str(compress_reference[0] / "model"))
  config.checkpoint_every = 1
  real_run_training = align_module.run_training

  def run_training_with_poison(state, train_step, *args, **kwargs):
    calls = {"n": 0}

    def poisoned_step(state, batch):
      calls["n"] += 1
      if calls["n"] == 4:
        poison = lambda x: (jnp.where(True, jnp.nan, x) if jnp.issubdtype(x.dtype, jnp.floating)
                            else x)
        state = state.replace(params=jax.tree_util.tree_map(poison, state.params))
      return train_step(state, batch)

    return real_run_training(state, poisoned_step, *args, **kwargs)

  monkeypatch.setattr(align_module, "run_training", run_training_with_poison)
  with pytest.raises(NonFiniteLossError) as info:
    align.run(config, tmp_path)
  assert info.value.step == 4 and info.value.last_good_checkpoint_step == 3
  _assert_stopped_with_good_checkpoint(info, tmp_path, tmp_path / "train" / "checkpoints")
