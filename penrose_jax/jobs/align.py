"""The `align` job: KL alignment of a compressed checkpoint to its original (dense) model.

Workdir layout:
  compress/      the compress job's workdir when `student` is empty (compressed here first)
  train/         checkpoints/ (orbax, latest + best by validation logit KL), metrics.jsonl
  model/         the aligned model checkpoint folder
  report.json    hidden/logit KL and perplexity before/after, tokens, throughput, wall time

Parallelism: `config.parallel` builds the mesh at start-up; student and teacher params are
placed with the sharding rules and every train / validation / perplexity batch is split over
the data axes (`parallel.batch_placement`); jit propagates those shardings through the step.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any

import ml_collections
import numpy as np

from penrose_jax import parallel
from penrose_jax.alignment.align import AlignmentConfig, ObjectiveConfig, align
from penrose_jax.data import text_sources
from penrose_jax.evaluation import perplexity
from penrose_jax.io import model_registry
from penrose_jax.jobs import compress, config_checks
from penrose_jax.jobs import workdir as workdir_guard
from penrose_jax.models.linear import dense_equivalent
from penrose_jax.reporting import plots, report_json, workdir_layout
from penrose_jax.reporting.stage_timer import StageTimer
from penrose_jax.training.metrics_log import read_metrics
from penrose_jax.training.optimizer import OptimizerConfig


def _selected(eval_config: ml_collections.ConfigDict) -> dict[str, str]:
  """eval_config.text_sets minus the names in its optional skip_text_sets."""
  return text_sources.selected_text_sets(eval_config.text_sets,
                                         eval_config.get("skip_text_sets", ""))


def text_set_perplexities(params: Any, model_config: Any, tokenizer: Any,
                          eval_config: ml_collections.ConfigDict) -> tuple[dict, list[str]]:
  """Perplexity per configured text set (missing sets are skipped and listed).

  Args:
    params: params pytree.
    model_config: the architecture.
    tokenizer: TextTokenizer.
    eval_config: text_sets, window, max_windows, batch_size; skip_text_sets (comma list of
      text_sets names to leave out) is optional.

  Returns:
    ({set: ppl}, skipped messages).
  """
  results, missing = perplexity.text_set_perplexities(
      params, model_config, tokenizer, _selected(eval_config), eval_config.window,
      eval_config.max_windows or None, eval_config.batch_size)
  return ({name: result["ppl"] for name, result in results.items()},
          [f"eval text set {name}: {path} not found" for name, path in missing])


def measured_by_compress(report_path: str, eval_config: ml_collections.ConfigDict,
                         student_spec: str, teacher_spec: str) -> tuple[dict, dict]:
  """Perplexities a compress report already measured on the same windows.

  The compress job evaluates the dense and the compressed model on its text sets; when its
  student checkpoint, teacher and window settings are the ones alignment would use, those
  numbers are the alignment's "before" and "teacher" perplexities (no need to run them again).

  Args:
    report_path: the compress job's report.json ('' = nothing to reuse).
    eval_config: alignment's eval config (text_sets, window, max_windows).
    student_spec: the student checkpoint alignment loads.
    teacher_spec: the teacher alignment loads.

  Returns:
    ({set: student ppl}, {set: teacher ppl}) for the sets that match; empty dicts otherwise.

  Raises:
    ValueError: report_path is set but is not a readable compress report.
  """
  if not report_path:
    return {}, {}
  path = pathlib.Path(report_path)
  try:
    report = json.loads(path.read_text(encoding="utf-8"))
    used = report["config"]["eval"]
    checkpoint, source = report["checkpoint"], report["config"]["model"]
  except (OSError, ValueError, KeyError, TypeError) as err:
    raise ValueError(f"eval.compress_report={report_path}: expected a compress job's "
                     f"report.json with config.eval, config.model and checkpoint ({err!r})"
                     ) from err
  same_models = (pathlib.Path(checkpoint).resolve() == pathlib.Path(student_spec).resolve()
                 and source == teacher_spec)
  same_windows = all(used.get(k) == eval_config[k] for k in ("window", "max_windows"))
  if not (same_models and same_windows):
    return {}, {}
  sets = [name for name, spec in _selected(eval_config).items()
          if used.get("text_sets", {}).get(name) == spec
          and name in report.get("ppl_compressed_by_set", {})
          and name in report.get("ppl_dense_by_set", {})]
  return ({n: report["ppl_compressed_by_set"][n] for n in sets},
          {n: report["ppl_dense_by_set"][n] for n in sets})


def _perplexities_except(known: dict, params: Any, model_config: Any, tokenizer: Any,
                         eval_config: ml_collections.ConfigDict) -> tuple[dict, list[str]]:
  """text_set_perplexities for the sets not in `known`, merged with `known`."""
  todo = ml_collections.ConfigDict(eval_config.to_dict())
  todo.text_sets = {k: v for k, v in _selected(eval_config).items() if k not in known}
  todo.skip_text_sets = ""  # already applied
  measured, skipped = (text_set_perplexities(params(), model_config, tokenizer, todo)
                       if todo.text_sets else ({}, []))
  return {**known, **measured}, skipped


def source_label(spec: str) -> str:
  """Short name of a text source spec for metric keys ('../x/texts@dev' -> 'texts@dev')."""
  base, _, split = str(spec).partition("@")
  name = pathlib.Path(base.split(":", 1)[-1]).stem or base
  return f"{name}@{split}" if split else name


def validation_windows(config: ml_collections.ConfigDict, tokenizer: Any
                       ) -> tuple[np.ndarray, list[str], list[str]]:
  """num_val_windows windows from each existing val source, labelled by source.

  Args:
    config: the job config (val_sources, num_val_windows, window, seed).
    tokenizer: TextTokenizer.

  Returns:
    (windows (N, window), source label per window, skipped messages).
  """
  used, skipped = text_sources.available_sources(list(config.val_sources))
  if not used:
    raise FileNotFoundError(f"none of the validation sources exist: {list(config.val_sources)}")
  parts, labels = [], []
  for spec in used:
    rows = text_sources.token_windows_from_sources([spec], tokenizer, config.num_val_windows,
                                                   config.window, config.seed + 1)
    parts.append(rows)
    labels += [source_label(spec)] * rows.shape[0]
  return np.concatenate(parts, axis=0), labels, skipped


def quality_curve(metrics: list[dict[str, Any]], report: dict[str, Any], tokens_per_step: int
                  ) -> dict[str, tuple[list[float], list[float]]]:
  """Validation perplexity / teacher perplexity per set against training tokens.

  Args:
    metrics: records of the run's metrics.jsonl (eval steps carry 'eval/ppl_<set>').
    report: the alignment report (ppl_<set>_before, val_teacher).
    tokens_per_step: batch_size x window.

  Returns:
    Set name -> (training tokens, student ppl / teacher ppl), starting at 0 tokens.
  """
  teacher = report.get("val_teacher") or {}
  curves: dict[str, tuple[list[float], list[float]]] = {}
  for key, floor in sorted(teacher.items()):
    if key == "ppl" or not floor:
      continue
    xs, ys = [0.0], [report.get(f"{key}_before", float("nan")) / floor]
    for record in metrics:
      if f"eval/{key}" in record:
        xs.append(float(record["step"] * tokens_per_step))
        ys.append(record[f"eval/{key}"] / floor)
    curves[key[len("ppl_"):]] = (xs, ys)
  return curves


def plot_quality_curve(curve: dict[str, tuple[list[float], list[float]]], path: pathlib.Path
                       ) -> pathlib.Path:
  """PNG of `quality_curve`: one line per set, perplexity / teacher's vs tokens (log y)."""
  return plots.line_plot(curve, path, "held-out perplexity vs alignment tokens",
                         "training tokens", "perplexity / teacher's", logy=True)


def alignment_config(config: ml_collections.ConfigDict) -> AlignmentConfig:
  """Builds the library's AlignmentConfig from the job config.

  Args:
    config: the job config.

  Returns:
    AlignmentConfig.
  """
  objective = ObjectiveConfig(weights=dict(config.objective.weights),
                              temperature=config.objective.temperature,
                              layers=tuple(config.objective.layers) if config.objective.layers
                              else None)
  opt = config.optimizer
  return AlignmentConfig(
      objective=objective,
      optimizer=OptimizerConfig(learning_rate=opt.learning_rate, warmup_steps=opt.warmup_steps,
                                total_steps=0, weight_decay=opt.weight_decay,
                                clip_norm=opt.clip_norm),
      trainable=config.trainable, num_steps=config.num_steps, batch_size=config.batch_size,
      seed=config.seed, log_every=config.log_every, eval_every=config.eval_every,
      checkpoint_every=config.checkpoint_every, eval_batch_size=config.batch_size)


@workdir_guard.claims_workdir("align")
def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
  """Aligns config.student (or a freshly compressed model) to its teacher.

  Args:
    config: see configs/align.py.
    workdir: output folder (a rerun resumes training from the latest checkpoint).

  Returns:
    The report dict.
  """
  start = time.time()
  timer = StageTimer()  # this process's seconds per stage, in the report as stage_s
  mesh, rules, data_axes = parallel.setup_for_job(config)
  workdir = pathlib.Path(workdir)
  align_cfg = alignment_config(config)  # validates the objective before any work
  student_spec, teacher_spec = config.student, config.teacher
  teacher_cache = workdir / "model_cache"
  if not student_spec:
    if "compress" not in config:
      raise ValueError("config.student is empty and there is no config.compress section")
    compress.run(config.compress, workdir / "compress")
    student_spec = str(workdir / "compress" / "model")
    teacher_spec = teacher_spec or config.compress.model
    teacher_cache = workdir / "compress" / "model_cache"
  if not teacher_spec:
    raise ValueError("config.teacher is empty; name the original model the student came from")
  with timer.stage("load"):
    student = model_registry.load(student_spec)
    teacher = model_registry.load(teacher_spec, cache_dir=teacher_cache)
  # The compress section only counts when this job compresses (no student given).
  config_checks.check_context({k: v for k, v in config.items() if k != "compress"},
                              student.config.max_position, student.name)
  if student.config != teacher.config:
    raise ValueError(f"student {student_spec} and teacher {teacher_spec} have different "
                     f"architectures: {student.config} vs {teacher.config}")
  with timer.stage("load"):
    student = student._replace(params=parallel.shard_params(student.params, mesh, rules))
    teacher = teacher._replace(params=parallel.shard_params(teacher.params, mesh, rules))
  with parallel.batch_placement(mesh, data_axes):
    return _align_loaded(config, workdir, start, align_cfg, student, teacher, student_spec,
                         teacher_spec, timer)


def _align_loaded(config: ml_collections.ConfigDict, workdir: pathlib.Path, start: float,
                  align_cfg: AlignmentConfig, student: Any, teacher: Any, student_spec: str,
                  teacher_spec: str, timer: StageTimer) -> dict[str, Any]:
  """The part of `run` after loading: windows, perplexities, alignment, checkpoint, report."""
  # Execution choice for compressed kernels in training (see models.linear.linear).
  mcfg = dataclasses.replace(student.config, compressed_matmul=config.compressed_matmul)
  tok = student.tokenizer
  train, _, skipped = text_sources.windows_from_existing_sources(
      config.train_sources, tok, config.num_train_windows, config.window, config.seed)
  val, val_groups, skipped_val = validation_windows(config, tok)
  # Perplexities use dense-equivalent trees: same values, the dense compiled forward.
  known_before, known_teacher = measured_by_compress(
      config.eval.get("compress_report", ""), config.eval, student_spec, teacher_spec)
  with timer.stage("ppl"):
    ppl_before, skipped_eval = _perplexities_except(
        known_before, lambda: dense_equivalent(student.params), student.config, tok,
        config.eval)
  aligned, result = align(student.params, teacher.params, mcfg, train, val,
                          align_cfg, str(workdir / workdir_layout.ALIGN_TRAIN_DIR), timer=timer,
                          val_groups=val_groups)
  with timer.stage("ppl"):
    ppl_after, _ = text_set_perplexities(dense_equivalent(aligned), student.config, tok,
                                         config.eval)
    ppl_teacher, _ = _perplexities_except(known_teacher, lambda: teacher.params,
                                          teacher.config, tok, config.eval)
  with timer.stage("write"):
    model_registry.save_model_checkpoint(
        workdir / "model", student.config, aligned, tok,
        provenance={"name": f"{student.name} + KL alignment", "source_model": teacher_spec,
                    "student": student_spec})
  metrics_file = workdir / workdir_layout.ALIGN_METRICS  # absent when num_steps is 0
  curve = quality_curve(read_metrics(str(metrics_file)) if metrics_file.exists() else [], result,
                        config.batch_size * config.window)
  if curve:
    with timer.stage("write"):
      plot_quality_curve(curve, workdir / "align_curve.png")
  metrics = {**result, "stage_s": timer.rounded(), "ppl_before": ppl_before,
             "quality_curve": {k: {"tokens": xs, "ppl_over_teacher": ys}
                               for k, (xs, ys) in curve.items()},
             "ppl_after": ppl_after,
             "ppl_teacher": ppl_teacher,
             "ppl_reused_from_compress": sorted(known_before),
             "skipped": skipped + skipped_val + skipped_eval, "checkpoint": str(workdir / "model"),
             "student": student_spec, "teacher": teacher_spec}
  report = report_json.build_report("align", config, student.name, time.time() - start, metrics)
  report_json.write_json_atomic(workdir / "report.json", report)
  return report
