"""SOFC-Exp extraction on the dev split: majority / zero-shot / k-shot / supervised / one-pass.

Command (from the repo root, inside .venv; the README table's run, see docs/sofc_extraction.md
for its planned ~35 min on the shared 2-core machine and a longer adaptation):
  nice -n 10 python benchmarks/sofc_extraction.py --out=workdirs/sofc_extraction
  python benchmarks/sofc_extraction.py --quick --model=DIR/tiny --data_root=ROOT --out=/tmp/x

Methods (`--methods`), each one row of DIR/results.csv:
  majority   always 'no' / no mentions, on the detection draw (read off the zero-shot run)
  zero_shot  the model as it is
  k_shot     --k_shot solved train-split sentences in every prompt
  adapted    zero-shot after `qa_tune` on the `sofc_tasks` source of the train articles
             (configs/qa_tune.py:sofc_tasks, LoRA; --adapted=DIR reuses a finished qa_tune
             workdir or model folder instead of training into DIR/train/adapted). Mode
             onepass_augmented by default: the section-wise rows (task pairs + section text)
             shuffled, without sectionwise's per-section loss passes, which doubled the time
             of a 1-update-per-section run; --adapt_mode=sectionwise for the curriculum.
  onepass    zero-shot after qa_tune --config.mode=onepass on the same articles: next-token
             loss over their texts with the same token budget (--onepass=DIR reuses one)
--compressed=MODEL_DIR adds rows for a compressed model folder ('compressed_' prefix;
--compressed_methods, default --methods; its training runs update the stored blocks at
--compressed_learning_rate, as the pipeline's Q&A stage does).
Every row is scored on the same sentences: --max_sentences experiment sentences for entities
and slots and --detection_sentences sentences for detection, each shared out over all dev
articles with a seeded draw (evaluation/extraction.spread_sentences). Each scored row is kept
in DIR/rows/<name>.json with the settings it was measured with; a rerun skips rows whose
settings match and qa_tune resumes its own runs (DIR/train/<row>_<config hash>/), so an
interrupted run continues and a run with other training flags trains anew beside it.
Writes DIR/results.csv, DIR/results.json, DIR/report.md and DIR/extraction_scores.png.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import pathlib
import sys
import time
from typing import Any, Optional

from absl import app, flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

from configs import qa_tune as qa_tune_config  # noqa: E402
from penrose_jax.data import paths  # noqa: E402
from penrose_jax.evaluation import extraction, sofc_annotations  # noqa: E402
from penrose_jax.io import model_registry  # noqa: E402
from penrose_jax.jobs import qa_tune  # noqa: E402
from penrose_jax.reporting.extraction_table import (  # noqa: E402
    EXTRACTION_COLUMNS, extraction_plot, extraction_scores, extraction_table)
from penrose_jax.models.linear import dense_equivalent  # noqa: E402
from penrose_jax.reporting import markdown, report_json  # noqa: E402

METHODS = ("majority", "zero_shot", "k_shot", "adapted", "onepass")
FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "output folder (rerun to continue)", required=True)
flags.DEFINE_string("model", "default", "model spec (io/model_registry.load)")
flags.DEFINE_string("data_root", "../shared/data/sofc_exp", "SOFC-Exp root (a config path)")
flags.DEFINE_string("split", "dev", "evaluated split")
flags.DEFINE_list("methods", list(METHODS), "rows to measure")
flags.DEFINE_integer("max_sentences", 10, "experiment sentences for entities / slots (0 = all)")
flags.DEFINE_integer("detection_sentences", 48, "sentences for detection (0 = all)")
flags.DEFINE_integer("k_shot", 4, "solved examples in the k_shot row's prompts")
flags.DEFINE_integer("seed", 0, "sentence draw, k-shot examples and training seed")
flags.DEFINE_integer("max_new_tokens", 64, "answer budget of entities / slots")
flags.DEFINE_string("adapted", "", "finished qa_tune workdir or model folder to reuse")
flags.DEFINE_string("onepass", "", "finished one-pass qa_tune workdir or model folder to reuse")
flags.DEFINE_integer("adapt_articles", 1, "train articles to train on, evenly spaced (0 = all)")
flags.DEFINE_integer("adapt_steps_per_section", 1,
                     "updates per section: a run makes sections x this many updates")
flags.DEFINE_string("adapt_mode", "onepass_augmented",
                    "qa_tune mode of the adapted row ('onepass_augmented' or 'sectionwise')")
flags.DEFINE_float("adapt_replay_fraction", 0.0, "qa_tune replay_fraction")
flags.DEFINE_float("adapt_general_fraction", 0.0, "qa_tune general_replay_fraction")
flags.DEFINE_integer("adapt_max_per_document", 40, "sentences per task and article")
flags.DEFINE_string("adapt_tasks", "detection,entities,slots", "tasks trained as Q&A pairs")
flags.DEFINE_integer("adapt_batch_size", 4, "rows per update")
flags.DEFINE_integer("adapt_seq_len", 384, "tokens per row (prompts are ~300 tokens)")
flags.DEFINE_float("learning_rate", 1e-3, "qa_tune learning rate (LoRA)")
flags.DEFINE_string("compressed", "", "compressed model folder: rows for it too")
flags.DEFINE_list("compressed_methods", None, "rows of the compressed model (default: --methods)")
flags.DEFINE_float("compressed_learning_rate", 3e-5,
                   "learning rate when training a compressed model's stored blocks")
flags.DEFINE_bool("quick", False, "tiny sizes for tests (pass --model and --data_root)")


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
                 compressed: bool) -> Any:
  """The qa_tune config of a supervised (sectionwise) or one-pass run.

  Args:
    args: the driver settings.
    root: resolved data root.
    model: the model spec to start from.
    mode: 'onepass' (the reading baseline) or 'adapt' (--adapt_mode).
    compressed: the model is a compressed checkpoint (train its stored blocks, not LoRA).

  Returns:
    A configs/qa_tune.py:sofc_tasks config with the driver's overrides.
  """
  config = qa_tune_config.get_config("sofc_tasks")
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
                  method: str, reuse: str, compressed: bool) -> tuple[str, dict[str, Any]]:
  """The model folder of the adapted / one-pass row: reused, or trained now (resumes).

  Args:
    args: the driver settings.
    root: resolved data root.
    out: the driver's folder.
    base: model spec to train from.
    method: 'adapted' or 'onepass'.
    reuse: a qa_tune workdir or model folder to reuse ('' = train).
    compressed: training a compressed model.

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
                          compressed)
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


def measure(args: dict[str, Any], out: pathlib.Path) -> list[dict[str, Any]]:
  """Measures every planned row that is not stored yet; returns all rows in plan order.

  Args:
    args: the driver settings.
    out: output folder.

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
                                     args[method] if kind == "dense" else "", kind == "compressed")
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


def driver_args() -> dict[str, Any]:
  """The flags as a dict; --quick shrinks the sizes for a test run."""
  args = {name: FLAGS[name].value for name in (
      "model", "data_root", "split", "methods", "max_sentences", "detection_sentences", "k_shot",
      "seed", "max_new_tokens", "adapted", "onepass", "adapt_articles",
      "adapt_steps_per_section", "adapt_mode", "adapt_replay_fraction",
      "adapt_general_fraction", "adapt_max_per_document", "adapt_tasks", "adapt_batch_size",
      "adapt_seq_len", "learning_rate", "compressed", "compressed_methods",
      "compressed_learning_rate", "quick")}
  for name in ("methods", "compressed_methods"):
    args[name] = [m.strip() for m in args[name] or [] if m.strip()]
  if args["quick"]:
    args.update(max_sentences=2, detection_sentences=4, k_shot=1, max_new_tokens=8,
                adapt_max_per_document=4, adapt_batch_size=2, adapt_seq_len=128)
  return args


def main(argv: list[str]) -> None:
  del argv
  start = time.time()
  args = driver_args()
  out = pathlib.Path(FLAGS.out)
  rows = measure(args, out)
  write_outputs(rows, args, out, time.time() - start)
  print(extraction_table([(r["name"], r["scores"]) for r in rows]))
  print(f"wrote {out / 'report.md'} ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
  app.run(main)
