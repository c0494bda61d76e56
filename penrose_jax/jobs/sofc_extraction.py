"""SOFC-Exp extraction rows (majority / zero-shot / k-shot / adapted / one-pass) of one or two
models, scored on the same seeded sentences; the library half of benchmarks/sofc_extraction.py
(whose docstring lists the methods, settings and outputs).

`run(args, out, base_config)` measures every row not stored yet in OUT/rows/ (a rerun skips
rows whose settings match; qa_tune resumes its own runs under OUT/train/) and writes
OUT/results.csv, results.json, report.md and extraction_scores.png. `args` is the driver's
settings dict (the benchmark's flags); `base_config` the qa_tune config the adapted and
one-pass rows train from (configs/qa_tune.py:sofc_tasks), passed in because the library
imports no configs.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import pathlib
import time
from typing import Any

import jax
import ml_collections

from penrose_jax.data import paths
from penrose_jax.evaluation import extraction, sofc_annotations
from penrose_jax.io import model_registry
from penrose_jax.jobs import qa_tune
from penrose_jax.models.linear import dense_equivalent
from penrose_jax.reporting import markdown, report_json
from penrose_jax.reporting.extraction_table import (EXTRACTION_COLUMNS, extraction_plot,
                                                    extraction_scores, extraction_table)

METHODS = ("majority", "zero_shot", "k_shot", "adapted", "onepass")


def settings(args: dict[str, Any], root: pathlib.Path, shots: int, tasks: str,
             max_sentences: int) -> extraction.ExtractionSettings:
  """The ExtractionSettings of one scoring call.

  Args:
    args: the driver settings (`driver_args`).
    root: resolved data root.
    shots: shot count.
    tasks: comma list of tasks.
    max_sentences: sentences per task.

  Returns:
    ExtractionSettings.
  """
  return extraction.ExtractionSettings(
      data_root=str(root), split=args["split"], max_sentences=max_sentences, k_shot=str(shots),
      tasks=tasks, seed=args["seed"], max_new_tokens=args["max_new_tokens"], samples=3)


def score_model(model: Any, args: dict[str, Any], root: pathlib.Path, shots: int
                ) -> dict[str, Any]:
  """Detection on its own draw, then entities and slots on theirs, at one shot count.

  Args:
    model: a model_registry.Loaded with dense-equivalent params.
    args: the driver settings.
    root: resolved data root.
    shots: shot count.

  Returns:
    {'scores': EXTRACTION_COLUMNS values, 'majority', 'sentences', 'wall_s',
     'seconds_per_sentence' (per task), 'detection', 'spans'} (the last two: evaluate_extraction
     outputs).
  """
  start = time.time()
  det = extraction.evaluate_extraction(
      model.params, model.config, model.tokenizer,
      settings(args, root, shots, "detection", args["detection_sentences"]))
  spans = extraction.evaluate_extraction(
      model.params, model.config, model.tokenizer,
      settings(args, root, shots, "entities,slots", args["max_sentences"]))
  key = f"{shots}_shot"
  scores = extraction_scores(det, shots)
  scores.update({k: v for k, v in extraction_scores(spans, shots).items() if v is not None})
  sentences = {**det["sentences"], **spans["sentences"]}
  timing = {task: run[key][task]["wall_s"] / max(1, sentences[task])
            for run in (det, spans) for task in run[key]}
  return {"scores": scores, "majority": det["majority"], "sentences": sentences,
          "sentences_per_article": {**det["sentences_per_article"],
                                    **spans["sentences_per_article"]},
          "seconds_per_sentence": timing, "wall_s": time.time() - start,
          "detection": det, "spans": spans}


def train_articles(root: pathlib.Path, count: int) -> list[str]:
  """The train-split doc_ids to adapt on: all, or `count` evenly spaced ones.

  Args:
    root: resolved data root.
    count: how many (0 = all).

  Returns:
    doc_ids in doc_id order.
  """
  names = sorted(d for d, s in sofc_annotations.read_splits(root).items() if s == "train")
  if 0 < count < len(names):
    names = [names[int(i * len(names) / count)] for i in range(count)]
  return names


def adapt_config(args: dict[str, Any], root: pathlib.Path, model: str, mode: str,
                 compressed: bool, base_config: ml_collections.ConfigDict
                 ) -> ml_collections.ConfigDict:
  """The qa_tune config of a supervised (sectionwise) or one-pass run.

  Args:
    args: the driver settings.
    root: resolved data root.
    model: the model spec to start from.
    mode: 'onepass' (the reading baseline) or 'adapt' (--adapt_mode).
    compressed: the model is a compressed checkpoint (train its stored blocks, not LoRA).
    base_config: the qa_tune config to start from (configs/qa_tune.py:sofc_tasks); not changed.

  Returns:
    A copy of base_config with the driver's overrides.
  """
  config = copy.deepcopy(base_config)
  config.model = model
  config.mode = mode if mode == "onepass" else args["adapt_mode"]
  # A short adaptation spends every row on the articles: replay and general text guard against
  # forgetting over a long curriculum, which these rows do not measure. The one-pass baseline
  # gets the same (no general rows), so the two differ only in what the rows hold.
  config.replay_fraction = args["adapt_replay_fraction"]
  config.general_replay_fraction = args["adapt_general_fraction"]
  config.corpus = str(root / "texts")
  config.documents = ",".join(train_articles(root, args["adapt_articles"]))
  config.sofc_tasks.data_root = str(root)
  config.sofc_tasks.seed = args["seed"]
  config.sofc_tasks.max_per_document = args["adapt_max_per_document"]
  config.sofc_tasks.tasks = args["adapt_tasks"]
  config.steps_per_section = args["adapt_steps_per_section"]
  config.batch_size = args["adapt_batch_size"]
  config.seq_len = args["adapt_seq_len"]
  config.learning_rate = args["learning_rate"]
  config.seed = args["seed"]
  # The extraction scores are this driver's measurement: no held-out / benchmark evaluation,
  # no per-section answer traces (two greedy answers per section doubled the time), and a
  # train-state checkpoint (~0.75 GB) every 25 sections instead of every section.
  config.eval.enabled = False
  config.trace_questions = 0
  config.checkpoint_every_sections = 25
  if compressed:
    config.trainable = "compressed"
    config.learning_rate = args["compressed_learning_rate"]
  if args["quick"]:
    config.general_text = ""  # the packaged general text: no ../shared needed
  return config


def trained_model(args: dict[str, Any], root: pathlib.Path, out: pathlib.Path, base: str,
                  method: str, reuse: str, compressed: bool,
                  base_config: ml_collections.ConfigDict) -> tuple[str, dict[str, Any]]:
  """The model folder of the adapted / one-pass row: reused, or trained now (resumes).

  Args:
    args: the driver settings.
    root: resolved data root.
    out: the driver's folder.
    base: model spec to train from.
    method: 'adapted' or 'onepass'.
    reuse: a qa_tune workdir or model folder to reuse ('' = train).
    compressed: training a compressed model.
    base_config: the qa_tune config runs start from (`adapt_config`).

  Returns:
    (model folder, training facts for the report: steps, train_wall_s, s_per_step, ...).
  """
  if reuse:
    folder = pathlib.Path(reuse)
    folder = folder / "model" if (folder / "model").is_dir() else folder
    report = folder.parent / "report.json"
    facts = json.loads(report.read_text()) if report.is_file() else {}
  else:
    config = adapt_config(args, root, base, "onepass" if method == "onepass" else "adapt",
                          compressed, base_config)
    wanted = json.loads(json.dumps(report_json.build_report("", config, "", 0, {})["config"]))
    # One folder per config: qa_tune resumes whatever checkpoints its folder holds, so a run of
    # other settings (e.g. more --adapt_articles) must never share one.
    digest = hashlib.sha1(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:8]
    workdir = out / "train" / f"{'compressed_' if compressed else ''}{method}_{digest}"
    done = workdir / "report.json"
    facts = (json.loads(done.read_text()) if done.is_file() else {})
    if facts.get("config") != wanted:  # not finished: train (or resume)
      facts = qa_tune.run(config, workdir)
      jax.clear_caches()  # the train step's programs are not needed again
    folder = workdir / "model"
  steps = facts.get("train_steps")
  wall = facts.get("train_wall_s")
  return str(folder), {"model_dir": str(folder), "train_steps": steps, "train_wall_s": wall,
                       "s_per_step": wall / steps if steps and wall else None,
                       "final_train_loss": facts.get("final_train_loss"),
                       "qa_pairs_total": facts.get("qa_pairs_total")}


def rows_plan(args: dict[str, Any]) -> list[tuple[str, str, str]]:
  """The rows to report.

  Args:
    args: the driver settings (methods, compressed, compressed_methods).

  Returns:
    (row name, model kind 'dense' | 'compressed', method) in report order.
  """
  wanted = {"dense": args["methods"]}
  if args["compressed"]:
    wanted["compressed"] = args["compressed_methods"] or args["methods"]
  unknown = [m for methods in wanted.values() for m in methods if m not in METHODS]
  if unknown:
    raise ValueError(f"--methods: unknown {unknown}; expected some of {METHODS}")
  return [(("compressed_" if kind == "compressed" else "") + m, kind, m)
          for kind, methods in wanted.items() for m in METHODS if m in methods]


def row_key(args: dict[str, Any], name: str, model: str, training: dict[str, Any]) -> str:
  """Hash of what a row's numbers depend on (a stored row with another key is measured anew).

  Args:
    args: the driver settings.
    name: row name.
    model: model spec.
    training: the trained model's facts (a retrained model in the same folder differs in them).

  Returns:
    Hex digest.
  """
  fields = {k: args[k] for k in ("data_root", "split", "max_sentences", "detection_sentences",
                                 "seed", "max_new_tokens")}
  fields.update(name=name, model=model, k_shot=args["k_shot"] if "k_shot" in name else 0,
                training=training)
  return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def measure(args: dict[str, Any], out: pathlib.Path, base_config: ml_collections.ConfigDict
            ) -> list[dict[str, Any]]:
  """Measures every planned row that is not stored yet; returns all rows in plan order.

  Args:
    args: the driver settings.
    out: output folder.
    base_config: the qa_tune config the adapted / one-pass runs start from.

  Returns:
    Row dicts: name, method, model, scores, sentences, seconds_per_sentence, wall_s, training.
  """
  root = paths.resolve_data_path(args["data_root"])
  if not (root / "metadata.tsv").is_file():
    raise FileNotFoundError(f"{root / 'metadata.tsv'} not found (--data_root)")
  base_spec = {"dense": args["model"], "compressed": args["compressed"]}
  if args["model"] == "tiny":  # build once, so the training runs see the same files
    tiny = out / "model_cache" / "tiny"
    if not model_registry.is_model_checkpoint(tiny):
      model_registry.build_tiny_model(tiny)
    base_spec["dense"] = str(tiny)
  rows: dict[str, dict[str, Any]] = {}
  loaded: dict[str, Any] = {}  # one model in memory at a time
  for name, kind, method in rows_plan(args):
    if method == "majority":
      continue  # read off the zero-shot run below
    training: dict[str, Any] = {}
    spec = base_spec[kind]
    if method in ("adapted", "onepass"):
      spec, training = trained_model(args, root, out, base_spec[kind], method,
                                     args[method] if kind == "dense" else "", kind == "compressed",
                                     base_config)
    key = row_key(args, name, spec, training)
    path = out / "rows" / f"{name}.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    if stored.get("key") == key:
      print(f"[{name}] already measured: {path}", flush=True)
      rows[name] = stored
      continue
    if spec not in loaded:
      loaded.clear()
      jax.clear_caches()
      model = model_registry.load(spec, cache_dir=out / "model_cache")
      # Compressed leaves score through their dense equivalent (the dense compiled forward).
      loaded[spec] = model._replace(params=dense_equivalent(model.params))
    print(f"[{name}] scoring {spec}", flush=True)
    shots = args["k_shot"] if method == "k_shot" else 0
    result = score_model(loaded[spec], args, root, shots)
    row = {"key": key, "name": name, "method": method, "kind": kind, "model": spec,
           "shots": shots, "training": training, **result}
    report_json.write_json_atomic(path, row)
    rows[name] = row
    print(f"[{name}] {json.dumps(row['scores'])} in {row['wall_s']:.0f} s", flush=True)
  for name, kind, method in rows_plan(args):
    zero = rows.get(("compressed_" if kind == "compressed" else "") + "zero_shot")
    if method == "majority" and zero is not None:
      rows[name] = {"name": name, "method": method, "kind": kind, "model": "-",
                    # Predicting nothing scores 0 on every span measure.
                    "scores": {k: zero["majority"].get(k, 0.0) for k, _ in EXTRACTION_COLUMNS},
                    "sentences": zero["sentences"], "wall_s": 0.0, "training": {}}
  return [rows[name] for name, _, _ in rows_plan(args) if name in rows]


def write_outputs(rows: list[dict[str, Any]], args: dict[str, Any], out: pathlib.Path,
                  wall_s: float) -> None:
  """DIR/results.csv, results.json, report.md and extraction_scores.png, each atomically.

  Args:
    rows: `measure`'s rows.
    args: the driver settings.
    out: output folder.
    wall_s: this invocation's seconds.
  """
  columns = ["name", "model"] + [k for k, _ in EXTRACTION_COLUMNS] + [
      "wall_s", "train_steps", "train_wall_s", "s_per_step"]
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(columns)
  flat = []
  for row in rows:
    values = {"name": row["name"], "model": row["model"], **row["scores"],
              "wall_s": round(row["wall_s"], 1), **{k: row["training"].get(k) for k in (
                  "train_steps", "train_wall_s", "s_per_step")}}
    flat.append(values)
    writer.writerow(["" if values.get(c) is None else values.get(c) for c in columns])
  report_json.write_text_atomic(out / "results.csv", buffer.getvalue())
  report_json.write_json_atomic(out / "results.json", {
      "settings": args, "rows": [{k: v for k, v in r.items() if k not in ("detection", "spans")}
                                 for r in rows], "wall_s": wall_s})
  table_rows = [(r["name"], r["scores"]) for r in rows]
  plot = extraction_plot(table_rows, out / "extraction_scores.png",
                         f"SOFC-Exp extraction, {args['split']} split")
  sentences = next((r["sentences"] for r in rows if r["method"] != "majority"), {})
  timing = [[r["name"]] + [r.get("seconds_per_sentence", {}).get(t)
                           for t in ("detection", "entities", "slots")]
            + [r["wall_s"], r["training"].get("train_steps"), r["training"].get("s_per_step")]
            for r in rows if r["method"] != "majority"]
  text = "\n".join([
      "# SOFC-Exp extraction\n",
      f"Model: {args['model']}" + (f"; compressed: {args['compressed']}" if args["compressed"]
                                   else "") + f"  \nSplit: {args['split']}; sentences per task: "
      f"{sentences} (seeded draw {args['seed']}, shared out over every article); k_shot row: "
      f"{args['k_shot']} train-split examples; answer budget {args['max_new_tokens']} tokens.\n",
      extraction_table(table_rows),
      "Detection: log-likelihood of 'yes' vs 'no' (accuracy, F1 of 'yes'); entities / slots: "
      "greedy answers parsed into spans, micro-F1 by exact and by overlap match. majority: "
      "always 'no', lists nothing. adapted: zero-shot after qa_tune on the sofc_tasks source "
      "of the train articles; onepass: after reading the same articles with the same token "
      "budget (docs/sofc_extraction.md).\n",
      "## Time\n",
      markdown.table(["row", "s / detection sentence", "s / entity sentence",
                      "s / slot sentence", "scoring s", "train steps", "s / train step"],
                     timing),
      f"![extraction scores]({plot.name})\n"])
  report_json.write_text_atomic(out / "report.md", text)


def run(args: dict[str, Any], out: str | pathlib.Path, base_config: ml_collections.ConfigDict
        ) -> list[dict[str, Any]]:
  """Measures the planned rows and writes the outputs.

  Args:
    args: the driver settings (benchmarks/sofc_extraction.py `driver_args`).
    out: output folder (rerun to continue).
    base_config: the qa_tune config the adapted / one-pass rows train from.

  Returns:
    The rows in plan order (`measure`).
  """
  start = time.time()
  out = pathlib.Path(out)
  rows = measure(args, out, base_config)
  write_outputs(rows, args, out, time.time() - start)
  return rows
