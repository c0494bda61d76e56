"""The `qa_tune` job: section-wise Q&A fine-tuning (or its baselines) and closed-book evaluation.

Stages: load the model and the corpus; build the training Q&A (rule / curated / model sources,
resumable qa_pairs.jsonl); evaluate before training (cached in DIR/eval_before.json so a resumed
or sibling run with the same model and eval settings reuses it); train in `mode`
(qa/trainer.py; resumable checkpoints, metrics.jsonl, traces.jsonl); evaluate after; save the
tuned model (LoRA merged into dense kernels unless `save_merged` is False) as DIR/model; write
DIR/report.json.

Parallelism: `config.parallel` builds the mesh at start-up; the loaded params are placed with
the sharding rules and training / evaluation batches are split over the data axes
(`parallel.batch_placement`); generation runs on the sharded params as jit propagates.
"""

from __future__ import annotations

import dataclasses

import hashlib
import json
import pathlib
import time
from typing import Any

import jax
import ml_collections
from absl import logging

from penrose_jax import parallel
from penrose_jax.data import ingest, jsonl_files, paths
from penrose_jax.evaluation import closed_book
from penrose_jax.io import model_registry
from penrose_jax.jobs import config_checks, exam_eval, self_test
from penrose_jax.jobs import workdir as workdir_guard
from penrose_jax.models import lora
from penrose_jax.qa import curated, fact_recall, model_generate, records, run_control
from penrose_jax.qa import sofc_source, study_material, train_data, trainer
from penrose_jax.qa.curriculum_config import CurriculumConfig, check_trainable
from penrose_jax.reporting import report_json, workdir_layout


# The exam scores a learning-curve point records (report.json exam_curve).
CURVE_KEYS = ("exam_accuracy_sum", "exam_accuracy_mean")


def resolve_path(path: str) -> pathlib.Path | None:
  """Resolves a config path ('' = none; else `data.paths.resolve_data_path`: 'package:'
  names, ../shared).

  Args:
    path: the config value.

  Returns:
    The path, or None for ''.
  """
  return paths.resolve_data_path(path) if path else None


def curriculum_config(config: ml_collections.ConfigDict) -> CurriculumConfig:
  """The trainer settings of a qa_tune config.

  Args:
    config: see configs/qa_tune.py.

  Returns:
    CurriculumConfig.
  """
  names = [f.name for f in CurriculumConfig.__dataclass_fields__.values()]
  values = {name: config[name] for name in names if name in config}
  return CurriculumConfig(**values)


def load_documents(config: ml_collections.ConfigDict) -> tuple[list[ingest.Document], list[str]]:
  """Loads the corpus, keeps the selected documents (reading order = path order).

  Args:
    config: needs corpus, documents (comma list of doc_ids, '' = all), max_documents
      (0 = all), max_section_words (0 = as read).

  Returns:
    (documents, problems).
  """
  path = paths.resolve_data_path(config.corpus)
  documents, problems = ingest.load_corpus(path, max_section_words=config.max_section_words or None)
  wanted = [d.strip() for d in config.documents.split(",") if d.strip()]
  if wanted:
    by_id = {d.doc_id: d for d in documents}
    missing = [d for d in wanted if d not in by_id]
    if missing:
      raise ValueError(f"documents {missing} not in corpus {path}")
    documents = [by_id[d] for d in wanted]
  if config.max_documents > 0:
    documents = documents[:config.max_documents]
  if not documents:
    raise ValueError(f"no documents loaded from {path} (problems: {problems})")
  return documents, problems


def _eval_before(loaded: Any, params: Any, questions: list, config: ml_collections.ConfigDict,
                 workdir: pathlib.Path) -> dict[str, Any]:
  """Before-training metrics, cached by (model, questions, eval settings)."""
  key = hashlib.sha1(json.dumps([config.model, [q.question for q in questions],
                                 config.eval.to_dict()], sort_keys=True).encode()).hexdigest()
  cache = workdir / "eval_before.json"
  if cache.exists():
    stored = json.loads(cache.read_text())
    if stored.get("key") == key:
      logging.info("reusing %s", cache)
      return stored["metrics"]
  metrics = closed_book.evaluate_qa_model(loaded, params, questions, config.eval)
  report_json.write_json_atomic(cache, {"key": key, "metrics": metrics})
  return metrics


@workdir_guard.claims_workdir("qa_tune")
def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
  """Runs the job and writes DIR/report.json (+ qa_pairs.jsonl, traces.jsonl, metrics.jsonl,
  model/).

  Args:
    config: see configs/qa_tune.py.
    workdir: output folder (a rerun with the same config resumes).

  Returns:
    The report dict.
  """
  start = time.time()
  mesh, rules, data_axes = parallel.setup_for_job(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  say = lambda text: print(f"[qa_tune {time.time() - start:7.1f}s] {text}", flush=True)
  loaded = model_registry.load(config.model, cache_dir=workdir / "model_cache")
  # How compressed kernels are applied in training / generation (see models.linear.linear).
  loaded = loaded._replace(config=dataclasses.replace(
      loaded.config, compressed_matmul=config.get("compressed_matmul", "factored")))
  loaded = loaded._replace(params=parallel.shard_params(loaded.params, mesh, rules))
  say(f"loaded {loaded.name}")
  config_checks.check_context(config, loaded.config.max_position, loaded.name)
  if config.mode != "none":
    check_trainable(loaded.params, curriculum_config(config))  # before any evaluation
  with parallel.batch_placement(mesh, data_axes):
    return _run_loaded(config, workdir, start, say, loaded)


def _run_loaded(config: ml_collections.ConfigDict, workdir: pathlib.Path, start: float,
                say: Any, loaded: Any) -> dict[str, Any]:
  """The part of `run` after loading: Q&A pairs, evaluation, training, checkpoint, report."""
  documents, problems = load_documents(config)
  say(f"{len(documents)} documents, {sum(len(d.sections) for d in documents)} sections")
  # A user's exam is read before the long stages: an unusable question stops the run here.
  run_exam = exam_eval.load_run_exam(config, documents)
  sources = [s.strip() for s in config.qa_sources.split(",") if s.strip()]
  settings = model_generate.ModelQASettings(**config.model_qa.to_dict())
  qa_path = workdir / "qa_pairs.jsonl"
  t0 = time.time()
  build = model_generate.build_qa_pairs(
      documents, qa_path, sources, model=loaded, curated_path=resolve_path(config.curated_path),
      settings=settings, sofc=sofc_source.settings_from_config(config.get("sofc_tasks")),
      log=say, study_variants=config.get("study_variants", 4),
      study_max_facts=config.get("study_max_facts", 0))
  qa_seconds = time.time() - t0
  pairs, rejected = model_generate.read_all_pairs(qa_path)
  stats = model_generate.qa_statistics(documents, pairs, rejected)
  say(f"Q&A pairs {stats['qa_pairs_by_source']}, rejection rate {stats['filter_rejection_rate']}")
  study_texts, study_stats = [], None
  shard_paths = [records.shard_output_path(qa_path, i, jax.process_count())
                 for i in range(jax.process_count())]
  if {"study", "recall"} & set(sources):  # restatements, notes: text rows of their sections
    study_texts = study_material.read_study_texts(study_material.texts_path(p)
                                                  for p in shard_paths)
  if "study" in sources:
    study_stats = study_material.study_statistics(
        documents, config.get("study_variants", 4), config.get("study_max_facts", 0))
    say(f"study material: {study_stats['facts']} facts, {study_stats['pairs']} pairs, "
        f"{len(study_texts)} texts")
  # The self-test (jobs/self_test.py): held-out and trained wordings of the recall facts.
  selftest = fact_recall.read_selftest(fact_recall.selftest_path(p) for p in shard_paths)
  selftest_heldout = fact_recall.pick_selftest(selftest, "heldout")
  selftest_cfg = self_test.settings(config)
  selftest_curve = {q.question for q in fact_recall.pick_selftest(
      selftest, "heldout", selftest_cfg.curve_per_doc)}
  if selftest:
    say(f"self-test: {len(selftest_heldout)} facts, {len(selftest_curve)} scored at the "
        f"curve points")

  skipped = list(problems) + build["notes"] + ([run_exam.note] if run_exam.note else [])
  doc_ids = {d.doc_id for d in documents}
  heldout_path = resolve_path(config.heldout_path)
  questions = []
  if heldout_path is not None and heldout_path.is_file():
    questions = [q for q in curated.load_heldout_questions(heldout_path) if q.doc_id in doc_ids]
  elif heldout_path is not None:  # '' = no held-out questions asked for
    skipped.append(f"held-out questions {heldout_path} not found")
  cfg = curriculum_config(config)
  general_texts, general_note = ([], "general replay disabled")
  if cfg.general_replay_fraction > 0:
    general_texts, general_note = train_data.load_general_texts(
        resolve_path(config.general_text), config.general_text_max)
  before = after = exam_before = exam_after = selftest_before = selftest_after = None
  curve_recall = lambda scored: None if scored is None or not selftest_curve else sum(
      a["contains"] for a in scored["answers"] if a["question"] in selftest_curve) / len(
          selftest_curve)
  if config.eval.enabled:
    before = _eval_before(loaded, loaded.params, questions, config, workdir)
    say(f"before: LL {before['heldout_ll_accuracy']} EM {before['heldout_em']} "
        f"general {before['general_accuracy']}")
    if run_exam:
      exam_before = exam_eval.score_before(loaded, loaded.params, run_exam, config, workdir, say)
      say(f"exam before: accuracy sum/mean {exam_before['exam_accuracy_sum']} / "
          f"{exam_before['exam_accuracy_mean']}, EM {exam_before['exam_em']}")
    if selftest_heldout and cfg.mode != "none":
      selftest_before = self_test.score(loaded, loaded.params, selftest_heldout,
                                        selftest_cfg.max_new_tokens)
      selftest_before["gold_ranks"] = self_test.gold_ranks(loaded, loaded.params, selftest,
                                                           run_exam.open)
      say(f"self-test before: {selftest_before['recalled']} of {selftest_before['questions']} "
          f"facts recalled")
  # Learning curve: the multiple-choice exam (cheap: no generation) at points inside the run.
  curve_exam = exam_eval.RunExam(run_exam.choice,
                                 run_exam.open if selftest_cfg.curve_open_exam else [], 0, "")
  curve_selftest = [q for q in selftest_heldout if q.question in selftest_curve]
  evaluate = None
  if (curve_exam or curve_selftest) and config.eval.enabled and cfg.curve_points > 1:
    def evaluate(params):
      params = lora.merge_lora(params)
      point = {}
      if curve_exam:
        scores = exam_eval.score(loaded, params, curve_exam, config.eval)
        point.update({k: scores[k] for k in CURVE_KEYS})
        if curve_exam.open:
          point["exam_contains"] = scores["exam_contains"]
      if curve_selftest:
        point["selftest_recall"] = self_test.score(loaded, params, curve_selftest,
                                                   selftest_cfg.max_new_tokens)["recall"]
      say(f"learning curve: {point}")
      return point
  t0 = time.time()
  outcome = trainer.train(loaded.config, loaded.params, loaded.tokenizer, documents, pairs,
                          general_texts, cfg, workdir, progress=False, study_texts=study_texts,
                          evaluate=evaluate)
  train_seconds = time.time() - t0
  say(f"trained {outcome.steps} steps, {outcome.train_tokens} tokens, "
      f"{outcome.tokens_per_s:.1f} tokens/s, final loss {outcome.final_loss}")
  tuned = lora.merge_lora(outcome.params) if config.save_merged else outcome.params
  if config.eval.enabled:
    after = (before if cfg.mode == "none"
             else closed_book.evaluate_qa_model(loaded, tuned, questions, config.eval))
    say(f"after: LL {after['heldout_ll_accuracy']} EM {after['heldout_em']} "
        f"general {after['general_accuracy']}")
    skipped += before["skipped"] + after["skipped"]
    report_json.write_json_atomic(workdir / workdir_layout.QA_HELDOUT_ANSWERS, {
        "before": before["heldout_answers"], "after": after["heldout_answers"]})
    if run_exam:
      exam_after = (exam_before if cfg.mode == "none"
                    else exam_eval.score(loaded, tuned, run_exam, config.eval))
      say(f"exam after: accuracy sum/mean {exam_after['exam_accuracy_sum']} / "
          f"{exam_after['exam_accuracy_mean']}, EM {exam_after['exam_em']}")
      report_json.write_json_atomic(workdir / "exam_answers.json", {
          "before": exam_before["exam_answers"], "after": exam_after["exam_answers"]})
    if selftest_before is not None:
      selftest_after = {split: self_test.score(
          loaded, tuned, fact_recall.pick_selftest(selftest, split), selftest_cfg.max_new_tokens)
          for split in fact_recall.SPLITS}
      selftest_after["gold_ranks"] = self_test.gold_ranks(loaded, tuned, selftest, run_exam.open)
      say(f"self-test after: held-out {selftest_after['heldout']['recalled']} of "
          f"{selftest_after['heldout']['questions']}, trained wordings "
          f"{selftest_after['trained']['recalled']} of {selftest_after['trained']['questions']}")
      report_json.write_json_atomic(workdir / "selftest_answers.json", {
          "before": selftest_before["answers"],
          **{f"after_{k}": selftest_after[k]["answers"] for k in fact_recall.SPLITS}})
  if cfg.mode != "none" and config.save_model:
    model_registry.save_model_checkpoint(
        # The execution mode is a run-time choice, not part of the saved model.
        workdir / "model", dataclasses.replace(loaded.config, compressed_matmul="factored"),
        tuned, loaded.tokenizer,
        provenance={"name": f"{loaded.name} + qa_tune {cfg.mode} ({cfg.trainable})",
                    "source_model": config.model, "job": "qa_tune", "mode": cfg.mode})
  pick = lambda metrics, key: None if metrics is None else metrics[key]
  exam_curve = []
  curve_path = workdir / workdir_layout.QA_CURVE
  if evaluate is not None and cfg.mode != "none":  # evaluate implies exam before / after
    point = lambda step, scores, recall: {
        "step": step, "train_tokens": step * cfg.batch_size * cfg.seq_len,
        **({k: scores[k] for k in CURVE_KEYS} if scores else {}),
        **({"exam_contains": scores["exam_contains"]} if scores and curve_exam.open else {}),
        **({"selftest_recall": curve_recall(recall)} if curve_selftest else {})}
    inner = jsonl_files.read_jsonl(curve_path) if curve_path.exists() else []
    # A run stopped at a plateau ends at its last inner point: the end point replaces it.
    inner = [p for p in inner if p["step"] < outcome.steps]
    exam_curve = ([point(0, exam_before, selftest_before)] + inner
                  + [point(outcome.steps, exam_after,
                           selftest_after and selftest_after["heldout"])])
    self_test.curve_plot(exam_curve, workdir / "plots" / "recall_curve.png")
  summary = lambda scored: None if scored is None else {
      k: scored[k] for k in ("questions", "recalled", "recall", "by_doc")}
  metrics = {
      "mode": cfg.mode, "trainable": cfg.trainable,
      "documents": len(documents), "sections": stats["sections"],
      "sections_per_document": stats["sections_per_document"],
      "heldout_questions": len(questions),
      "heldout_ll_accuracy_before": pick(before, "heldout_ll_accuracy"),
      "heldout_ll_accuracy_after": pick(after, "heldout_ll_accuracy"),
      "heldout_em_before": pick(before, "heldout_em"), "heldout_em_after": pick(after, "heldout_em"),
      "heldout_f1_before": pick(before, "heldout_f1"), "heldout_f1_after": pick(after, "heldout_f1"),
      "general_accuracy_before": pick(before, "general_accuracy"),
      "general_accuracy_after": pick(after, "general_accuracy"),
      "train_tokens": outcome.train_tokens, "loss_tokens": outcome.loss_tokens,
      "train_steps": outcome.steps, "tokens_per_s": outcome.tokens_per_s,
      "final_train_loss": outcome.final_loss, "row_counts": outcome.row_counts,
      "trainable_params": outcome.trainable.get("trainable_params"),
      "frozen_params": outcome.trainable.get("frozen_params"),
      "qa_pairs_by_source": stats["qa_pairs_by_source"], "qa_pairs_total": stats["qa_pairs_total"],
      "study_material": study_stats, "input_tokens": outcome.input_tokens,
      "learning_rate": run_control.resolved_learning_rate(cfg),
      "planned_steps": outcome.planned_steps,
      "selftest_before": summary(selftest_before),
      "selftest_after": summary(selftest_after and selftest_after["heldout"]),
      "selftest_after_trained_wordings": summary(selftest_after and selftest_after["trained"]),
      "gold_ranks_before": selftest_before and selftest_before["gold_ranks"],
      "gold_ranks_after": selftest_after and selftest_after["gold_ranks"],
      "fact_exposures": self_test.exposure_stats(outcome.fact_exposures, len(selftest_heldout)),
      "pairs_per_section_by_source": stats["pairs_per_section_by_source"],
      "model_pairs_generated": stats["model_pairs_generated"],
      "filter_rejection_rate": stats["filter_rejection_rate"],
      "qa_generation_s": qa_seconds, "train_wall_s": train_seconds, "exam_curve": exam_curve,
      "general_text": general_note, "notes": outcome.notes, "skipped": sorted(set(skipped)),
      **exam_eval.report_fields(run_exam, exam_before, exam_after)}
  report = report_json.build_report("qa_tune", config, loaded.name, time.time() - start, metrics)
  report_json.write_json_atomic(workdir / "report.json", report)
  say(f"wrote {workdir / 'report.json'}")
  return report
