"""Fault injection: SIGKILL the entrypoints at seeded random points, resume, compare to a clean run.

Each job is started as `python -m experiments.<job> --config=configs/<job>.py:quick
--workdir=DIR`, killed (SIGKILL, by pid) a random delay after a progress file appears, restarted
with the same command, killed again, ... and finally run to the end. Its outputs must equal an
uninterrupted in-process run of the same config (conftest reference fixtures): bit-identical
checkpoint arrays, and reports / metrics.jsonl equal once timing fields are dropped.
Also: a corrupted latest training checkpoint falls back to the previous one with a warning.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import pathlib
import random
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from penrose_jax.training import (OptimizerConfig, TrainCheckpoints, init_train_state,
                                  make_optimizer, make_schedule, make_train_step, read_metrics,
                                  run_training, trainable_mask)
from tests.reliability.conftest import (COMPRESS_TWO_PASS, QA_OVERRIDES, TIMING_KEYS,
                                        align_overrides, assert_same_arrays, checkpoint_arrays,
                                        entrypoint_command, run_and_kill, run_to_end,
                                        without_timing)

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]


def _kill_resume_cycle(job: str, workdir: pathlib.Path, overrides: dict, kills: int,
                       window_s: float, seed: int) -> list[str]:
  """Starts the job `kills` times, each time SIGKILLing it a seeded random delay in
  [0, window_s) after it starts writing, then runs it to the end. Returns each attempt's
  outcome ('killed', or 'finished' when the job ended before the kill)."""
  rng = random.Random(seed)
  cmd = entrypoint_command(job, workdir, overrides=overrides)
  outcomes = [run_and_kill(cmd, workdir, rng.uniform(0.2, window_s)) for _ in range(kills)]
  run_to_end(cmd)
  return outcomes


def test_compress_killed_three_times_equals_uninterrupted(tmp_path, compress_reference):
  ref_dir, ref_report = compress_reference
  workdir = tmp_path / "compress"
  outcomes = _kill_resume_cycle("compress", workdir, COMPRESS_TWO_PASS, kills=3, window_s=4.0,
                                seed=0)
  assert outcomes.count("killed") >= 2, outcomes
  assert_same_arrays(checkpoint_arrays(ref_dir / "model"), checkpoint_arrays(workdir / "model"))
  report = json.loads((workdir / "report.json").read_text())
  assert without_timing(report, workdir) == without_timing(
      json.loads(json.dumps(ref_report)), ref_dir)
  assert not glob.glob(str(workdir / "**" / "*.tmp"), recursive=True)


def test_align_killed_twice_equals_uninterrupted(tmp_path, align_reference):
  ref_dir, ref_report, student = align_reference
  workdir = tmp_path / "align"
  outcomes = _kill_resume_cycle("align", workdir, align_overrides(student),
                                kills=2, window_s=8.0, seed=1)
  assert "killed" in outcomes, outcomes
  assert (read_metrics(str(workdir / "train" / "metrics.jsonl"), drop_timing=True)
          == read_metrics(str(ref_dir / "train" / "metrics.jsonl"), drop_timing=True))
  assert_same_arrays(checkpoint_arrays(ref_dir / "model"), checkpoint_arrays(workdir / "model"))
  report = json.loads((workdir / "report.json").read_text())
  # start_step records where the last process resumed (a kill can land after the final step,
  # before the report); everything else must match.
  clean = lambda r, w: {k: v for k, v in without_timing(r, w).items() if k != "start_step"}
  assert clean(report, workdir) == clean(json.loads(json.dumps(ref_report)), ref_dir)
  assert 0 <= report["start_step"] <= report["num_steps"]


def test_qa_tune_killed_twice_equals_uninterrupted(tmp_path, qa_tune_reference):
  ref_dir, ref_report = qa_tune_reference
  workdir = tmp_path / "qa"
  outcomes = _kill_resume_cycle("qa_tune", workdir, QA_OVERRIDES, kills=2,
                                window_s=8.0, seed=2)
  assert "killed" in outcomes, outcomes
  report = json.loads((workdir / "report.json").read_text())
  # train_tokens / tokens_per_s count this process's steps only; the rest must match.
  drop = {"train_tokens"}
  clean = lambda r, w: {k: v for k, v in without_timing(r, w).items() if k not in drop}
  assert clean(report, workdir) == clean(json.loads(json.dumps(ref_report)), ref_dir)
  assert (read_metrics(str(workdir / "metrics.jsonl"), drop_timing=True)
          == read_metrics(str(ref_dir / "metrics.jsonl"), drop_timing=True))
  traces = lambda d: [without_timing(json.loads(line)) for line in
                      (d / "traces.jsonl").read_text().splitlines()]
  assert traces(workdir) == traces(ref_dir)
  assert_same_arrays(checkpoint_arrays(ref_dir / "model"), checkpoint_arrays(workdir / "model"))


def test_qa_tune_rerun_after_last_step_reports_the_same(tmp_path, qa_tune_reference):
  """A kill after the last update but before report.json (the resumed run trains nothing)
  must still report the logged final loss; CI once hit this window at random."""
  from penrose_jax.jobs import qa_tune
  from tests.reliability.conftest import qa_tune_quick
  ref_dir, ref_report = qa_tune_reference
  workdir = tmp_path / "qa"
  shutil.copytree(ref_dir, workdir)
  (workdir / "report.json").unlink()
  report = qa_tune.run(qa_tune_quick(), workdir)
  assert report["final_train_loss"] is not None
  assert report["final_train_loss"] == ref_report["final_train_loss"]


def test_sweep_runner_killed_twice_equals_uninterrupted(tmp_path):
  """configs/sweep_ratio.py:quick (two compress runs): killed twice, resumed, it gives the
  same results.csv (timing columns aside) and the same checkpoints as a clean in-process run."""
  from configs import sweep_ratio
  from penrose_jax.jobs import sweep
  ref_dir = tmp_path / "ref"
  sweep.run(sweep_ratio.get_config("quick"), ref_dir)
  workdir = tmp_path / "killed"
  rng = random.Random(3)
  cmd = [c.replace("configs/sweep.py:quick", "configs/sweep_ratio.py:quick")
         for c in entrypoint_command("sweep", workdir)]
  outcomes = [run_and_kill(cmd, workdir, rng.uniform(0.2, 6.0)) for _ in range(2)]
  run_to_end(cmd)
  assert "killed" in outcomes, outcomes

  def rows(directory):
    table = list(csv.DictReader((directory / "results.csv").open()))
    return [{k: v.replace(str(directory), "<W>") for k, v in row.items()
             if k.split(".")[0] not in TIMING_KEYS and not k.endswith("_s")} for row in table]

  assert rows(workdir) == rows(ref_dir)
  runs = sorted(p.name for p in (ref_dir / "runs").iterdir())
  assert runs == sorted(p.name for p in (workdir / "runs").iterdir()) and len(runs) == 2
  for name in runs:
    assert_same_arrays(checkpoint_arrays(ref_dir / "runs" / name / "model"),
                       checkpoint_arrays(workdir / "runs" / name / "model"))


# ---- corrupted latest training checkpoint ----

D = 4
_OPT = OptimizerConfig(learning_rate=0.05, warmup_steps=1, total_steps=9)


def _loss(params, batch, rng, constants):
  del rng, constants
  return jnp.mean((batch["x"] @ params["w"] - batch["x"]) ** 2), {}


def _batch(i):
  return {"x": np.random.default_rng([5, i]).normal(size=(3, D)).astype(np.float32)}


def _train(workdir, num_steps):
  params = {"w": jnp.zeros((D, D))}
  mask = trainable_mask(params, "all")
  opt = make_optimizer(_OPT)
  step = make_train_step(_loss, opt, mask, make_schedule(_OPT))
  return run_training(init_train_state(params, opt, mask, seed=0), step, _batch, num_steps,
                      str(workdir), log_every=1, checkpoint_every=3, progress=False,
                      async_checkpoints=False)


def _truncate_data_files(step_dir: pathlib.Path) -> None:
  for file in step_dir.glob("state/**/d/*"):
    data = file.read_bytes()
    file.write_bytes(data[:len(data) // 2])


def _garble_metadata(step_dir: pathlib.Path) -> None:
  (step_dir / "state" / "_METADATA").write_bytes(b"\x00garbled{" * 8)


@pytest.mark.parametrize("corrupt", [_truncate_data_files, _garble_metadata],
                         ids=["truncated-arrays", "garbled-metadata"])
def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, caplog, corrupt):
  straight = _train(tmp_path / "straight", 9)
  _train(tmp_path / "cut", 6)  # checkpoints at 3 and 6
  corrupt(tmp_path / "cut" / "checkpoints" / "6")
  with caplog.at_level(logging.WARNING):
    resumed = _train(tmp_path / "cut", 9)
  assert resumed.start_step == 3
  assert any("checkpoint step 6" in r.getMessage() and "cannot be restored" in r.getMessage()
             for r in caplog.records), [r.getMessage() for r in caplog.records]
  assert (tmp_path / "cut" / "checkpoints" / "6.corrupt").is_dir()
  np.testing.assert_array_equal(np.asarray(resumed.state.params["w"]),
                                np.asarray(straight.state.params["w"]))
  assert (read_metrics(str(tmp_path / "cut" / "metrics.jsonl"), drop_timing=True)
          == read_metrics(str(tmp_path / "straight" / "metrics.jsonl"), drop_timing=True))
  assert TrainCheckpoints(str(tmp_path / "cut" / "checkpoints")).latest_step() == 9


def test_every_checkpoint_corrupt_is_a_clear_error(tmp_path):
  _train(tmp_path, 6)
  for step in ("3", "6"):
    _garble_metadata(tmp_path / "checkpoints" / step)
  with pytest.raises(ValueError, match=r"none of the checkpoints \[3, 6\] can be restored"):
    _train(tmp_path, 9)
