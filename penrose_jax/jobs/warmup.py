"""The pipeline's optional warm-up stage: epochs of domain text on the dense model, before compressing.

The paper's pipeline step 1 (issue 29, item 6). It reuses the Q&A trainer's 'onepass' mode
(qa/trainer.py: the documents' text windows in reading order, `epochs` passes, every weight
trained; training/loop.py underneath: DIR/checkpoints every `checkpoint_every_steps` updates and
at the end, DIR/metrics.jsonl, a rerun resumes) on documents read from text sources
(data/text_sources.py: the compress stage's calibration sources in the pipeline). Sources that
are missing (no ../shared) are skipped and listed.

Writes DIR/report.json (ppl_before / ppl_after per text set on the same windows,
ppl_x_before, train_tokens, train_steps, tokens_per_s, documents, skipped, ...) and DIR/model
(a model checkpoint folder: the next stage, compress, loads it).
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import ml_collections

from penrose_jax.data import text_sources
from penrose_jax.io import model_registry
from penrose_jax.jobs import evaluate
from penrose_jax.jobs import workdir as workdir_guard
from penrose_jax.qa import trainer
from penrose_jax.data.ingest import Document, Section
from penrose_jax.reporting import report_json


def source_documents(specs: list[str], max_documents: int = 0
                     ) -> tuple[list[Document], list[str]]:
  """Every readable document of the sources, one section each, in source order.

  Args:
    specs: text source specs (folders, files, .jsonl, '@split'; data/text_sources.py).
    max_documents: at most this many documents per source (0 = all).

  Returns:
    (documents, skipped notes for missing sources).
  """
  documents, skipped = [], []
  for spec in specs:
    if not text_sources.source_path(spec).exists():
      skipped.append(f"warm-up source {spec}: {text_sources.source_path(spec)} not found")
      continue
    for name, text in text_sources.read_source(spec, max_documents or None):
      if text.strip():
        doc_id = f"{len(documents)}:{name}"
        documents.append(Document(doc_id, name, (Section(doc_id, 0, "", text),)))
  return documents, skipped


def curriculum_config(config: ml_collections.ConfigDict) -> trainer.CurriculumConfig:
  """The trainer settings of a warm-up: one-pass text, no Q&A, no replay, all weights."""
  return trainer.CurriculumConfig(
      mode="onepass", epochs_per_section=config.epochs, batch_size=config.batch_size,
      seq_len=config.seq_len, replay_fraction=0.0, general_replay_fraction=0.0,
      trainable="all", learning_rate=config.learning_rate, warmup_steps=config.warmup_steps,
      weight_decay=0.0, clip_norm=1.0, seed=config.seed, trace_questions=0, trace_losses=False,
      log_every=config.log_every,
      checkpoint_every_steps=config.get("checkpoint_every_steps", 0))


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
  """Warms the model up on domain text and writes DIR/report.json and DIR/model.

  Args:
    config: model, sources, max_documents, epochs, batch_size, seq_len, learning_rate,
      warmup_steps, seed, log_every, checkpoint_every_steps, eval (an evaluate config: the
      text sets measured before and after; configs/pipeline.py `warmup`).
    workdir: the stage folder (a rerun with the same config resumes).

  Returns:
    The report dict.

  Raises:
    ValueError: no source document could be read.
  """
  with workdir_guard.claim("warmup", config, workdir):
    return _run(config, pathlib.Path(workdir))


def _run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, Any]:
  start = time.time()
  say = lambda text: print(f"[warmup {time.time() - start:7.1f}s] {text}", flush=True)
  documents, skipped = source_documents(list(config.sources), config.max_documents)
  if not documents:
    raise ValueError(f"warm-up: no document in any of {list(config.sources)} ({skipped})")
  loaded = model_registry.load(config.model, cache_dir=workdir / "model_cache")
  say(f"loaded {loaded.name}; {len(documents)} documents")
  before = evaluate.evaluate_loaded(loaded, config.eval)
  say(f"perplexity before: {before['ppl']}")
  cfg = curriculum_config(config)
  outcome = trainer.train(loaded.config, loaded.params, loaded.tokenizer, documents, [], [],
                          cfg, workdir)
  say(f"trained {outcome.steps} steps, {outcome.train_tokens} tokens, "
      f"{outcome.tokens_per_s:.1f} tokens/s, final loss {outcome.final_loss}")
  warmed = loaded._replace(params=outcome.params)
  after = evaluate.evaluate_loaded(warmed, config.eval)
  say(f"perplexity after: {after['ppl']}")
  model_registry.save_model_checkpoint(
      workdir / "model", loaded.config, outcome.params, loaded.tokenizer,
      provenance={"name": f"{loaded.name} + domain warm-up ({config.epochs:g} epochs)",
                  "source_model": config.model, "job": "warmup"})
  ratio = {k: v / before["ppl"][k] for k, v in after["ppl"].items() if before["ppl"].get(k)}
  metrics = {"documents": len(documents), "epochs": config.epochs,
             "ppl_before": before["ppl"], "ppl_after": after["ppl"], "ppl_x_before": ratio,
             "train_steps": outcome.steps, "train_tokens": outcome.train_tokens,
             "loss_tokens": outcome.loss_tokens, "tokens_per_s": outcome.tokens_per_s,
             "final_train_loss": outcome.final_loss,
             "learning_rate": trainer.resolved_learning_rate(cfg),
             "trainable_params": outcome.trainable.get("trainable_params"),
             "notes": outcome.notes,
             "skipped": sorted(set(skipped + before["skipped"] + after["skipped"]))}
  report = report_json.build_report("warmup", config, loaded.name, time.time() - start, metrics)
  report_json.write_json_atomic(workdir / "report.json", report)
  say(f"wrote {workdir / 'report.json'}")
  return report
