"""qa_tune job: the quick config end to end on the tiny model (report fields and files)."""

import json

from configs import qa_tune as qa_tune_config
from penrose_jax.io import model_registry
from penrose_jax.jobs import qa_tune
from penrose_jax.qa import records


def test_quick_run_writes_report_and_files(tmp_path, tiny_model_dir):
  config = qa_tune_config.get_config("quick")
  config.model = str(tiny_model_dir)
  workdir = tmp_path / "run"
  report = qa_tune.run(config, workdir)
  for key in ("heldout_ll_accuracy_before", "heldout_ll_accuracy_after", "heldout_em_before",
              "heldout_em_after", "heldout_f1_before", "heldout_f1_after",
              "general_accuracy_before", "general_accuracy_after", "train_tokens",
              "tokens_per_s", "wall_s", "mode", "qa_pairs_by_source", "filter_rejection_rate"):
    assert key in report, key
  assert report["mode"] == "sectionwise" and report["job"] == "qa_tune"
  assert report["sections"] == 8 and report["heldout_questions"] > 0
  assert report["train_tokens"] == 8 * config.steps_per_section * config.batch_size * config.seq_len
  assert report["qa_pairs_by_source"]["rule"] > 0 and report["qa_pairs_by_source"]["curated"] > 0
  # The quick variant includes the study-material source: counted, and its texts are written.
  assert report["qa_pairs_by_source"]["study"] > 0 and report["study_material"]["facts"] > 0
  assert report["study_material"]["pairs_per_fact_mean"] > 1
  assert report["input_tokens"] <= report["train_tokens"]
  assert (workdir / "qa_pairs.study.jsonl").is_file()
  assert 0 <= report["heldout_ll_accuracy_after"] <= 1
  for name in ("report.json", "qa_pairs.jsonl", "traces.jsonl", "metrics.jsonl",
               "eval_before.json", "heldout_answers.json"):
    assert (workdir / name).is_file(), name
  pairs = records.read_qa_jsonl(workdir / "qa_pairs.jsonl")
  assert len(pairs) == report["qa_pairs_total"]
  traces = [json.loads(line) for line in (workdir / "traces.jsonl").open()]
  assert len(traces) == 8 and "before" in traces[1]["questions"][0]
  tuned = model_registry.load(str(workdir / "model"))
  assert tuned.config == model_registry.load(str(tiny_model_dir)).config
