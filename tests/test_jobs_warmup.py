"""The pipeline's domain warm-up stage (jobs/warmup.py) on the tiny model."""

import json
import shutil

import numpy as np

from configs import pipeline as pipeline_config
from penrose_jax.data import paths
from penrose_jax.io import model_registry
from penrose_jax.jobs import warmup


def _config(model):
  config = pipeline_config.get_config("quick")
  cfg = config.warmup
  del cfg.enabled
  cfg.model = str(model)
  cfg.sources = ["package:demo_corpus", "../shared/no_such_folder"]
  cfg.max_documents = 2
  cfg.checkpoint_every_steps = 2
  cfg.eval.text_sets = {"demo_corpus": "package:demo_corpus"}
  return cfg


def test_source_documents_skip_missing_sources_and_say_so():
  docs, skipped = warmup.source_documents(["package:demo_corpus", "../shared/nope"], 3)
  assert len(docs) == 3 and all(len(d.sections) == 1 and d.sections[0].text for d in docs)
  assert len({d.doc_id for d in docs}) == 3
  assert len(skipped) == 1 and "nope" in skipped[0]


def test_warmup_trains_saves_and_resumes(tmp_path, tiny_model_dir, monkeypatch):
  monkeypatch.setenv(paths.SHARED_DIR_ENV, str(tmp_path / "no_shared"))
  config = _config(tiny_model_dir)
  report = warmup.run(config, tmp_path / "run")
  assert report["job"] == "warmup" and report["documents"] == 2
  assert report["train_steps"] >= 2 and report["train_tokens"] > 0
  assert set(report["ppl_before"]) == set(report["ppl_after"]) == {"demo_corpus"}
  assert report["ppl_after"]["demo_corpus"] < report["ppl_before"]["demo_corpus"]
  assert any("no_such_folder" in s for s in report["skipped"])
  # The saved model is the warmed one (the next stage loads it).
  warmed = model_registry.load(str(tmp_path / "run" / "model"))
  base = model_registry.load(str(tiny_model_dir))
  kernel = lambda p: np.asarray(p["layers_0"]["mlp"]["up_proj"]["kernel"])
  assert not np.allclose(kernel(warmed.params), kernel(base.params))
  # Checkpoints every 2 updates (training/loop.py): a rerun whose report and model were lost
  # resumes from the last one instead of training again, and ends with the same model.
  assert (tmp_path / "run" / "checkpoints").is_dir()
  (tmp_path / "run" / "report.json").unlink()
  shutil.rmtree(tmp_path / "run" / "model")
  again = warmup.run(config, tmp_path / "run")
  assert again["ppl_after"] == report["ppl_after"]
  assert again["train_steps"] == report["train_steps"]
  metrics = [json.loads(line) for line in
             (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if line.strip()]
  assert [m["step"] for m in metrics] == list(range(1, report["train_steps"] + 1))
