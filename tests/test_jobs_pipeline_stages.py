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
