"""Pipeline stage reuse: a finished stage is reused only when its config and its input match."""

import ml_collections

from penrose_jax.jobs import pipeline
from penrose_jax.reporting import report_json


def _job(calls):
  def fn(config, workdir):
    calls.append(config.lr)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "checkpoint").write_text(str(config.lr))
    report = report_json.build_report("stage", config, "m", 0.0, {"lr": config.lr})
    report_json.write_json_atomic(workdir / "report.json", report)
    return report
  return fn


def test_stage_reused_rerun_after_upstream_and_config_changes(tmp_path):
  calls = []
  config = ml_collections.ConfigDict({"lr": 3e-4})
  stage = tmp_path / "qa_tune"
  _, ran = pipeline.run_stage("qa", _job(calls), config, stage)
  assert ran and calls == [3e-4]
  _, ran = pipeline.run_stage("qa", _job(calls), config, stage)
  assert not ran and calls == [3e-4]
  # Same config, but an earlier stage made a new input model: run again, old run kept aside.
  _, ran = pipeline.run_stage("qa", _job(calls), config, stage, upstream_ran=True)
  assert ran and calls == [3e-4, 3e-4]
  assert len(list(tmp_path.glob("qa_tune.previous_config_*"))) == 1
  # A changed config never resumes the other config's checkpoints: they move aside first.
  changed = ml_collections.ConfigDict({"lr": 3e-5})
  report, ran = pipeline.run_stage("qa", _job(calls), changed, stage)
  assert ran and report["lr"] == 3e-5 and (stage / "checkpoint").read_text() == "3e-05"
  assert len(list(tmp_path.glob("qa_tune.previous_config_*"))) == 2


def test_demo_qa_stage_plans_general_replay_rows():
  # The demo's earlier Q&A stage (1 update of 2 rows per section, general 0.125, replay 0.25)
  # planned round(0.25) = round(0.5) = 0 general and replay rows: only rule Q&A reached the
  # weights. The recall stage's per-section budgets leave room for general rows.
  import numpy as np
  from configs import pipeline as pipeline_config
  from penrose_jax.jobs import qa_tune
  from penrose_jax.qa import train_data
  sizes = [1, 30, 1, 20, 15, 16, 19, 1, 1, 35, 62, 19]  # the demo's 3 documents (SmolLM2)
  _, kinds = train_data.sectionwise_plan(sizes, 12, 1, 2, 0.25, 0.125, 0)
  assert not np.any(kinds == train_data.GENERAL) and not np.any(kinds == train_data.REPLAY)
  qa = pipeline_config.get_config("demo").qa_tune
  cfg = qa_tune.curriculum_config(qa)
  assert (qa.qa_sources, cfg.mode, cfg.completion) == ("recall", "onepass_augmented", "answer")
  assert cfg.trainable == "compressed" and qa.general_text == ""
  steps = train_data.section_steps(sizes, cfg.steps_per_section, cfg.epochs_per_section,
                                   cfg.batch_size, cfg.replay_fraction,
                                   cfg.general_replay_fraction, True)
  assert sum(steps) == 38
  _, kinds = train_data.sectionwise_plan(sizes, 12, steps, cfg.batch_size, cfg.replay_fraction,
                                         cfg.general_replay_fraction, 0)
  assert 0.05 < np.mean(kinds == train_data.GENERAL) < 0.15
