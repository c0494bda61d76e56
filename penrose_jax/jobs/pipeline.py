"""The `pipeline` job: the README's main job, the whole method end to end.

Stages, each in its own subfolder of the workdir and each the same job a user can run alone:
  dense/     load the model, answer a chat prompt, evaluate it (perplexity + benchmarks)
  warmup/    with `warmup.enabled`: jobs.warmup (epochs of domain text on the dense model; compress
             and align then use the warmed model as the dense one)
  compress/  jobs.compress (Penrose-tiled low-rank blocks, whitened, global budget)
  align/     jobs.align (KL alignment of the compressed model to the dense one)
  qa_tune/   jobs.qa_tune (the recall recipe on the demo corpus: restatements, short-answer Q&A,
             general replay; self-test on held-out wordings)
  final/     evaluation of the final model, same sets as dense/, and its answer to the chat prompt
The chat prompt is answered by every stage's model (DIR/<stage>/chat.json), so the report shows
where an answer breaks; a few self-test questions with the final model's answers follow.
  extraction/<dense|compressed|aligned|qa_tuned>/  with `extraction.enabled`: evaluate's SOFC-Exp
             extraction section alone (no text sets, no benchmarks) on each stage's model
Then DIR/report.md, DIR/report.json and DIR/plots/*.png (`run_reports/pipeline_report.py`: one row per
stage and one column per text set, plots, the command to chat with the final model). A stage
whose report.json exists with the same config is not rerun, so an interrupted pipeline continues
where it stopped.
"""

from __future__ import annotations

import gc
import json
import pathlib
import time
from typing import Any, Callable

import jax
import ml_collections

from penrose_jax.compression.transform import as_compression_config
from penrose_jax.io import model_registry
from penrose_jax.jobs import align, compress, config_checks, evaluate, qa_tune, warmup
from penrose_jax.jobs import workdir as workdir_guard
from penrose_jax.run_reports.pipeline_report import make_plots, render_markdown, summarize
from penrose_jax.models import generation
from penrose_jax.models.linear import dense_equivalent
from penrose_jax.reporting import report_json

STAGES = ("warmup", "compress", "align", "qa_tune")
# Self-test questions (held-out wordings) shown in report.md with the final model's answers.
OPEN_QUESTIONS = 4


def stage_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The training stages this config runs, in order (warm-up only when enabled)."""
  warm = config.get("warmup")
  return tuple(s for s in STAGES if s != "warmup" or (warm is not None and warm.enabled))


def _same_config(report_path: pathlib.Path, config: ml_collections.ConfigDict) -> bool:
  """A finished report of this config (result-neutral keys such as `overwrite` aside) whose
  recorded inputs (DIR/run_config.json, jobs/workdir.py) are unchanged."""
  if not report_path.exists():
    return False
  stored = json.loads(report_path.read_text()).get("config") or {}
  return (workdir_guard.flat_config(stored) == workdir_guard.flat_config(config)
          and not workdir_guard.changes(config, report_path.parent))


def run_stage(name: str, fn: Callable[[Any, pathlib.Path], dict], config: Any,
              directory: pathlib.Path, upstream_ran: bool = False
              ) -> tuple[dict[str, Any], bool]:
  """Runs one stage's job, or reuses its report when it already finished with this config.

  Args:
    name: stage name (for messages).
    fn: the job's run(config, workdir).
    config: the stage's config.
    directory: the stage's workdir.
    upstream_ran: an earlier stage ran anew, so this stage's input model changed even where
      its config (which names the input by path) did not: a finished run is not reused.

  Returns:
    (the stage's report dict, whether it ran now).
  """
  report_path = directory / "report.json"
  if not upstream_ran and _same_config(report_path, config):
    print(f"[{name}] already finished: reusing {report_path}", flush=True)
    return json.loads(report_path.read_text()), False
  if report_path.exists() or (workdir_guard.holds_results(directory) and (
      upstream_ran or workdir_guard.changes(config, directory))):
    # A run of another config or input model (finished, or killed part-way): its checkpoints
    # would be resumed as if they were this config's (a changed learning rate restored the
    # old final state and trained nothing). Keep it beside, under a new name, and start afresh.
    workdir_guard.move_run_aside(directory, name)
  print(f"[{name}] running -> {directory}", flush=True)
  start = time.time()
  report = fn(config, directory)
  # Drop the stage's compiled programs: stages share no compiled function, and in one process
  # the executables of the compressed model's train steps piled up until the Q&A stage's
  # compile ran out of memory (18 GB RSS on the 24 GB machine).
  jax.clear_caches()
  gc.collect()
  print(f"[{name}] done in {time.time() - start:.0f} s", flush=True)
  return report, True


def _evaluate_stage(spec: str, eval_config: ml_collections.ConfigDict, directory: pathlib.Path,
                    cache_dir: pathlib.Path, upstream_ran: bool = False
                    ) -> tuple[dict[str, Any], bool]:
  def job(cfg, workdir):
    start = time.time()
    loaded = model_registry.load(spec, cache_dir=cache_dir)
    metrics = evaluate.evaluate_loaded(loaded, cfg)
    report = report_json.build_report("evaluate", cfg, loaded.name, time.time() - start, metrics)
    report_json.write_json_atomic(pathlib.Path(workdir) / "report.json", report)
    return report
  return run_stage(f"evaluate {directory.name}", job, eval_config, directory, upstream_ran)


def _stage_configs(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, Any]:
  """Wires each stage's input to the previous stage's output (derived here, not in get_config)."""
  out = {}
  dense = config.model
  if "warmup" in stage_names(config):  # compress and align start from the warmed model
    out["warmup"] = ml_collections.ConfigDict(config.warmup.to_dict())
    del out["warmup"].enabled
    out["warmup"].model = config.model
    dense = str(workdir / "warmup" / "model")
  compress_cfg = ml_collections.ConfigDict(config.compress.to_dict())
  compress_cfg.model = dense
  align_cfg = ml_collections.ConfigDict(config.align.to_dict())
  align_cfg.student = str(workdir / "compress" / "model")
  align_cfg.teacher = dense
  align_cfg.eval.compress_report = str(workdir / "compress" / "report.json")
  qa_cfg = ml_collections.ConfigDict(config.qa_tune.to_dict())
  qa_cfg.model = str(workdir / "align" / "model")
  out.update({"compress": compress_cfg, "align": align_cfg, "qa_tune": qa_cfg})
  for cfg in out.values():  # a stage whose inputs changed starts afresh
    cfg.overwrite = config.get("overwrite", False)
  return out


# Extraction stage key -> (model folder under the workdir, or None for config.model; the last
# training stage whose model it evaluates). The order is the report's row order.
EXTRACTION_MODELS = {"dense": (None, None), "warmed": ("warmup/model", "warmup"),
                     "compressed": ("compress/model", "compress"),
                     "aligned": ("align/model", "align"), "qa_tuned": ("qa_tune/model", "qa_tune")}


def extraction_eval_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The evaluate config of an extraction stage: config.eval with only its extraction section.

  Args:
    config: the pipeline config (eval, extraction).

  Returns:
    An evaluate config with no text sets, benchmarks or exam, and `extraction` =
    config.extraction switched on.
  """
  cfg = ml_collections.ConfigDict(config.eval.to_dict())
  cfg.text_sets = ml_collections.ConfigDict()
  cfg.skip_text_sets = ""
  cfg.benchmarks = ""
  cfg.exam_path = cfg.open_exam_path = ""
  cfg.extraction = ml_collections.ConfigDict(config.extraction.to_dict())
  cfg.extraction.enabled = True
  return cfg


def extraction_stages(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                      cache_dir: pathlib.Path, ran_through: dict[str, bool]) -> dict[str, Any]:
  """Scores the dense, compressed, aligned and Q&A-tuned models on the SOFC-Exp tasks.

  Each model gets its own evaluate run in DIR/extraction/<stage>/ (reused like every stage),
  so the four rows share one sentence draw and one set of k-shot examples.

  Args:
    config: the pipeline config.
    workdir: pipeline folder.
    cache_dir: model cache folder.
    ran_through: training stage name -> whether it or an earlier stage ran anew (its model
      changed, so a finished extraction run of it is not reused).

  Returns:
    {'extraction_<stage>': evaluate report}.
  """
  eval_cfg = extraction_eval_config(config)
  out = {}
  for key, (folder, stage) in EXTRACTION_MODELS.items():
    if stage is not None and stage not in ran_through:  # a stage this config does not run
      continue
    spec = config.model if folder is None else str(workdir / folder)
    out[f"extraction_{key}"], _ = _evaluate_stage(
        spec, eval_cfg, workdir / "extraction" / key, cache_dir,
        bool(stage and ran_through.get(stage)))
  return out


def final_chat(model_dir: pathlib.Path, config: ml_collections.ConfigDict,
               cache_dir: pathlib.Path) -> str:
  """A stage model's greedy answer to config.chat_prompt (shown next to the dense answer).

  Args:
    model_dir: a stage's model folder (the Q&A stage's: the final model).
    config: the pipeline config (chat_prompt, chat_max_new_tokens).
    cache_dir: model cache folder.

  Returns:
    The answer text.
  """
  loaded = model_registry.load(str(model_dir), cache_dir=cache_dir)
  # Values only: the dense-equivalent tree decodes through the dense compiled forward.
  answer = generation.chat(dense_equivalent(loaded.params), loaded.config, loaded.tokenizer,
                           config.chat_prompt, max_new_tokens=config.chat_max_new_tokens)
  del loaded
  jax.clear_caches()
  gc.collect()
  return answer


def stage_chat(stage_dir: pathlib.Path, config: ml_collections.ConfigDict,
               cache_dir: pathlib.Path, ran: bool) -> str:
  """A stage model's answer to the chat prompt, kept in DIR/<stage>/chat.json.

  Args:
    stage_dir: the stage folder (its model in stage_dir/model).
    config: the pipeline config (chat_prompt, chat_max_new_tokens).
    cache_dir: model cache folder.
    ran: the stage (or one before it) ran anew: a stored answer is not reused.

  Returns:
    The answer text.
  """
  path = stage_dir / "chat.json"
  key = {"prompt": config.chat_prompt, "max_new_tokens": config.chat_max_new_tokens}
  if not ran and path.exists():
    stored = json.loads(path.read_text())
    if stored.get("key") == key:
      return stored["answer"]
  answer = final_chat(stage_dir / "model", config, cache_dir)
  report_json.write_json_atomic(path, {"key": key, "answer": answer})
  return answer


def open_questions(qa_dir: pathlib.Path, count: int = OPEN_QUESTIONS) -> list[dict[str, Any]]:
  """A few self-test questions (held-out wordings) with the answers before and after training.

  Args:
    qa_dir: the Q&A stage folder (its selftest_answers.json, jobs/qa_tune.py).
    count: questions shown, one per document in turn.

  Returns:
    [{'question', 'gold', 'before', 'after', 'recalled'}]; [] without a self-test.
  """
  path = qa_dir / "selftest_answers.json"
  if not path.exists():
    return []
  answers = json.loads(path.read_text())
  before = {a["question"]: a.get("answer") for a in answers.get("before") or []}
  after = answers.get("after_heldout") or []
  by_doc: dict[str, list] = {}
  for a in after:
    by_doc.setdefault(a.get("doc_id", ""), []).append(a)
  # Recalled ones first within each document, then documents in turn.
  queues = [sorted(v, key=lambda a: -float(a.get("contains", 0))) for v in by_doc.values()]
  picked = []
  while len(picked) < count and any(queues):
    for queue in queues:
      if queue and len(picked) < count:
        picked.append(queue.pop(0))
  return [{"question": a["question"], "gold": a.get("gold"), "before": before.get(a["question"]),
           "after": a.get("answer"), "recalled": bool(a.get("contains"))} for a in picked]


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
  """Runs the pipeline and writes DIR/report.md, DIR/report.json and DIR/plots/*.png.

  Args:
    config: see configs/pipeline.py.
    workdir: output folder (rerun to continue an interrupted pipeline).

  Returns:
    The report dict.
  """
  start = time.time()
  # Validate every stage's settings before the (long) dense stage runs.
  as_compression_config(config.compress.compression)
  align.alignment_config(config.align)
  workdir = pathlib.Path(workdir).resolve()
  # The stages record their configs in their own folders (run_stage moves changed ones aside).
  with workdir_guard.claim("pipeline", config, workdir, record=False):
    return _run_claimed(config, workdir, start)


def _run_claimed(config: ml_collections.ConfigDict, workdir: pathlib.Path, start: float
                 ) -> dict[str, Any]:
  """The pipeline after its workdir is claimed (see `run`)."""
  cache_dir = workdir / "model_cache"
  if config.model == "tiny":  # build once so every stage sees the same files
    if not model_registry.is_model_checkpoint(cache_dir / "tiny"):
      model_registry.build_tiny_model(cache_dir / "tiny")
    config = ml_collections.ConfigDict(config.to_dict())
    config.model = str(cache_dir / "tiny")
  loaded = model_registry.load(config.model, cache_dir=cache_dir)
  # Every stage's windows against the model's context, before the first (long) stage.
  config_checks.check_context(config, loaded.config.max_position, loaded.name)
  answer = generation.chat(loaded.params, loaded.config, loaded.tokenizer, config.chat_prompt,
                           max_new_tokens=config.chat_max_new_tokens)
  print(f"[chat] {config.chat_prompt}\n{answer}", flush=True)
  del loaded
  stages: dict[str, Any] = {}
  stages["dense"], _ = _evaluate_stage(config.model, config.eval, workdir / "dense", cache_dir)
  configs = _stage_configs(config, workdir)
  jobs = {"warmup": warmup.run, "compress": compress.run, "align": align.run,
          "qa_tune": qa_tune.run}
  upstream_ran = False  # once a stage runs anew, every later stage must too
  ran_through = {}
  stage_answers = {}
  for name in stage_names(config):
    stages[name], ran = run_stage(name, jobs[name], configs[name], workdir / name, upstream_ran)
    upstream_ran = upstream_ran or ran
    ran_through[name] = upstream_ran
    stage_answers[name] = stage_chat(workdir / name, config, cache_dir, upstream_ran)
    print(f"[chat, {name} model] {config.chat_prompt}\n{stage_answers[name]}", flush=True)
  stages["final"], _ = _evaluate_stage(str(workdir / "qa_tune" / "model"), config.eval,
                                       workdir / "final", cache_dir, upstream_ran)
  final_answer = stage_answers["qa_tune"]
  extraction = config.get("extraction")
  if extraction is not None and extraction.enabled:
    stages.update(extraction_stages(config, workdir, cache_dir, ran_through))
  summary = summarize(stages)
  plot_files = make_plots(stages, workdir)
  metrics = {"chat": {"prompt": config.chat_prompt, "answer": answer,
                      "final_answer": final_answer, "stage_answers": stage_answers},
             "open_questions": open_questions(workdir / "qa_tune"), "summary": summary,
             "stages": {k: {kk: vv for kk, vv in v.items() if kk not in ("config", "matrices")}
                        for k, v in stages.items()},
             "plots": [str(p.relative_to(workdir)) for p, _ in plot_files]}
  report = report_json.build_report("pipeline", config, stages["compress"]["model"],
                                    time.time() - start, metrics)
  report_json.write_json_atomic(workdir / "report.json", report)
  report_json.write_text_atomic(workdir / "report.md",
                                render_markdown(report, stages, plot_files, workdir))
  print(f"wrote {workdir / 'report.md'} ({report['wall_s']:.0f} s)", flush=True)
  return report
