"""The pipeline job's summary, plots and report.md (called by `jobs/pipeline.py`).

Reads the stage reports (and a few files in the stage folders: align/train/metrics.jsonl,
qa_tune/metrics.jsonl, qa_tune/traces.jsonl, qa_tune/heldout_answers.json, compress/stream/
state.json); writes nothing but DIR/plots/*.png. Every plot is optional: a stage file that is
missing (an older run, a stage with that part switched off) leaves its plot out.
The SOFC-Exp extraction rows come from `reporting/extraction_table.py`, which
`benchmarks/sofc_extraction.py` shares. This package (run_reports/) sits above every package it
reports on and below jobs/ (tests/test_package_layering.py); the files it opens in the stage
folders are named by `reporting.workdir_layout`.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shlex
from typing import Any, Optional

import ml_collections

from penrose_jax.compression import streaming
from penrose_jax.compression.tiling_plot import render_tiling_png
from penrose_jax.compression.transform import as_compression_config
from penrose_jax.data import paths
from penrose_jax.evaluation import closed_book
from penrose_jax.reporting import markdown, plots, workdir_layout
from penrose_jax.reporting.extraction_table import (EXTRACTION_COLUMNS, extraction_plot,
                                                    extraction_scores, extraction_table)
from penrose_jax.training.metrics_log import read_metrics

# (summary key, label in tables and plots), in pipeline order.
STAGE_ROWS = (("dense", "dense"), ("warmed", "warmed up"), ("compressed", "compressed"),
              ("aligned", "aligned"), ("qa_tuned", "Q&A-tuned"))
# Chat table rows: (pipeline stage whose model answers, label); 'dense' is the chat before.
CHAT_ROWS = (("warmup", "warmed up"), ("compress", "compressed"), ("align", "aligned"))
# Text-set columns in this order first (packaged sets are measured in every clone).
SET_ORDER = ("demo_corpus", "general_text", "sofc_dev", "lambada")
# Feature-softmax KL values below this are float noise (softmax over 576 features saturates).
KL_FLOOR = 1e-6
def _ratio(value: Optional[float], reference: Optional[float]) -> Optional[float]:
  if value is None or not reference or not math.isfinite(reference):
    return None
  return value / reference


def stage_perplexities(stages: dict[str, Any]) -> tuple[dict, dict]:
  """Perplexity of every stage per text set, and each one's ratio to the dense model.

  Dense and compressed come from the compress report (the same windows for both); aligned
  from the align report (its teacher value, on the same windows, is the reference); Q&A-tuned
  from the final evaluation, whose reference is the dense evaluation (same windows). With a
  warm-up stage, compress's "dense" model is the warmed one: the dense and warmed rows are the
  warm-up report's before / after (on compress's windows), and every row's reference is the
  dense model before the warm-up.

  Args:
    stages: stage name -> report ('dense', 'compress', 'align', 'qa_tune', 'final').

  Returns:
    ({stage: {set: ppl}}, {stage: {set: ppl / dense ppl on the same windows}}).
  """
  comp, al = stages["compress"], stages["align"]
  dense_eval, final = stages["dense"].get("ppl", {}), stages["final"].get("ppl", {})
  dense = comp.get("ppl_dense_by_set") or dense_eval
  ppl = {"dense": dict(dense), "compressed": dict(comp.get("ppl_compressed_by_set", {})),
         "aligned": dict(al.get("ppl_after", {})), "qa_tuned": dict(final)}
  refs = {"dense": dense, "compressed": dense, "aligned": al.get("ppl_teacher", {}),
          "qa_tuned": dense_eval}
  warm = stages.get("warmup")
  if warm:
    ppl["dense"], ppl["warmed"] = dict(warm.get("ppl_before", {})), dict(warm.get("ppl_after", {}))
    refs.update(dense=ppl["dense"], warmed=ppl["dense"], compressed=ppl["dense"],
                aligned=ppl["dense"])
  ratios = {stage: {name: _ratio(v, refs[stage].get(name)) for name, v in values.items()}
            for stage, values in ppl.items()}
  return ppl, ratios


def ordered_sets(ppl: dict[str, dict]) -> list[str]:
  """Text-set names measured by any stage, packaged sets first.

  Args:
    ppl: {stage: {set: value}}.

  Returns:
    Set names in column order.
  """
  names = set().union(*[set(v) for v in ppl.values()]) if ppl else set()
  return [n for n in SET_ORDER if n in names] + sorted(names - set(SET_ORDER))


def summarize(stages: dict[str, Any]) -> dict[str, Any]:
  """The headline numbers of every stage in one flat dict.

  Args:
    stages: stage name -> report.

  Returns:
    Flat summary (perplexities per stage and set and their ratios to dense, compression, KL,
    Q&A and benchmark scores).
  """
  comp, al, qa = stages["compress"], stages["align"], stages["qa_tune"]
  ppl, ratios = stage_perplexities(stages)
  return {
      "param_ratio": comp["param_ratio"], "params_dense": comp["params_dense"],
      "params_compressed": comp["params_compressed"], "bytes_compressed": comp["bytes_compressed"],
      "bytes_dense": comp["bytes_dense"], "hidden_kl_compressed": comp.get("hidden_kl"),
      "logit_kl_before_align": al.get("logit_kl_before"),
      "logit_kl_after_align": al.get("logit_kl_after"),
      "hidden_kl_before_align": al.get("hidden_kl_before"),
      "hidden_kl_after_align": al.get("hidden_kl_after"),
      "ppl": ppl, "ppl_x_dense": ratios,
      "heldout_ll_accuracy_before": qa.get("heldout_ll_accuracy_before"),
      "heldout_ll_accuracy_after": qa.get("heldout_ll_accuracy_after"),
      "heldout_f1_before": qa.get("heldout_f1_before"),
      "heldout_f1_after": qa.get("heldout_f1_after"),
      "qa_mode": qa.get("mode"), "qa_train_tokens": qa.get("train_tokens"),
      "selftest_before": (qa.get("selftest_before") or {}).get("recall"),
      "selftest_after": (qa.get("selftest_after") or {}).get("recall"),
      "selftest_recalled_after": (qa.get("selftest_after") or {}).get("by_doc"),
      "accuracy_dense": stages["dense"]["accuracy"], "accuracy_final": stages["final"]["accuracy"],
      "extraction": {name: scores for name, scores in extraction_rows(stages)},
  }


def headline_table(summary: dict[str, Any]) -> str:
  """report.md's perplexity table: one row per stage, per text set its value and x dense.

  Args:
    summary: `summarize`'s output.

  Returns:
    Markdown table text.
  """
  sets = ordered_sets(summary["ppl"])
  headers = ["stage"] + [h for n in sets for h in (n, f"{n} x dense")]
  rows = []
  for key, label in _stage_rows(summary):
    values, ratios = summary["ppl"].get(key, {}), summary["ppl_x_dense"].get(key, {})
    rows.append([label] + [c for n in sets for c in (values.get(n), _times(ratios.get(n)))])
  return markdown.table(headers, rows)


def _stage_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
  """STAGE_ROWS without the warm-up row of a pipeline that ran none."""
  return [(k, label) for k, label in STAGE_ROWS if k != "warmed" or k in summary["ppl"]]


def _times(ratio: Optional[float]) -> Optional[str]:
  return None if ratio is None else f"{ratio:.3g}x"


def _stage_plot(summary: dict[str, Any], out_dir: pathlib.Path) -> list[tuple]:
  ppl = summary["ppl"]
  sets = ordered_sets(ppl)
  if not sets:
    return []
  rows = _stage_rows(summary)
  labels = [label for _, label in rows]
  series = {n: [ppl.get(key, {}).get(n) for key, _ in rows] for n in sets}
  ratio_series = {n: [summary["ppl_x_dense"].get(key, {}).get(n) for key, _ in rows]
                  for n in sets}
  path = plots.category_plot(labels, series, out_dir / "ppl_by_stage.png",
                             "Perplexity after each stage", "perplexity", logy="auto")
  ratio_path = plots.category_plot(labels, ratio_series, out_dir / "ppl_x_dense_by_stage.png",
                                   "Perplexity relative to the dense model",
                                   "ppl / dense ppl (same windows)", logy="auto")
  return [(path, "Perplexity of each stage per text set (a missing point: not measured)."),
          (ratio_path, "The same, divided by the dense model's perplexity on the same windows.")]


def _divergence_plot(compress: dict[str, Any], out_dir: pathlib.Path) -> list[tuple]:
  rel = compress.get("hidden_rel_error_per_layer")
  kl = compress.get("hidden_kl_per_layer")
  panels = []
  if rel:
    panels.append({"series": {"compressed vs dense": (list(range(len(rel))), rel)},
                   "title": "Relative hidden-state error per layer", "xlabel": "layer",
                   "ylabel": "mean ||h_c - h_d|| / ||h_d||", "integer_x": True,
                   "ylim": (0, None)})
  if kl:
    clipped = [max(float(v), KL_FLOOR) for v in kl]
    below = sum(1 for v in kl if float(v) < KL_FLOOR)
    note = (f"{below} of {len(kl)} layers below {KL_FLOOR:g} (float noise), drawn at "
            f"{KL_FLOOR:g}" if below else "")
    panels.append({"series": {"compressed vs dense": (list(range(len(kl))), clipped)},
                   "title": "Feature-softmax hidden KL per layer (paper)", "xlabel": "layer",
                   "ylabel": "KL(softmax(h_d) || softmax(h_c))", "logy": True,
                   "integer_x": True, "note": note})
  if not panels:
    return []
  path = plots.panel_plot(panels, out_dir / "hidden_divergence_per_layer.png")
  return [(path, "How far each layer's output moves after compression (evaluation windows of "
                 "the compress stage). Left: relative error of the hidden states, the readable "
                 "measure; right: the preprint's softmax-over-features KL, which saturates.")]


def _align_plot(align_dir: pathlib.Path, align_report: dict[str, Any],
                out_dir: pathlib.Path) -> list[tuple]:
  file = align_dir / workdir_layout.ALIGN_METRICS
  if not file.exists():
    return []
  rows = [r for r in read_metrics(str(file)) if "step" in r]
  train = [r for r in rows if "loss" in r]
  evals = [r for r in rows if "eval/logit_kl" in r]
  if not train:
    return []
  val_steps = [0] + [r["step"] for r in evals]
  val_kl = [align_report.get("logit_kl_before")] + [r["eval/logit_kl"] for r in evals]
  left = {"train loss (logged steps)": ([r["step"] for r in train], [r["loss"] for r in train])}
  if evals:
    left["validation logit KL"] = (val_steps, val_kl, {"linestyle": "--", "marker": "s"})
  panels = [{"series": left, "title": "Alignment loss", "xlabel": "step", "ylabel": "loss / KL",
             "integer_x": True}]
  ppl_keys = sorted({k for r in evals for k in r if k.startswith("eval/ppl_")})
  if ppl_keys:
    panels.append({"series": {k[len("eval/ppl_"):]: ([r["step"] for r in evals if k in r],
                                                     [r[k] for r in evals if k in r])
                              for k in ppl_keys},
                   "title": "Held-out perplexity during alignment", "xlabel": "step",
                   "ylabel": "perplexity", "logy": "auto", "integer_x": True})
  path = plots.panel_plot(panels, out_dir / "align_loss.png")
  return [(path, "Alignment: training loss at every logged step (`align.log_every`) and the "
                 "validation logit KL at every `align.eval_every` (step 0: before alignment); "
                 "right: the student's perplexity per validation set.")]


def _section_key(doc_id: str, section: str) -> tuple[str, str]:
  return doc_id, " ".join(section.split()).lower()


def _heldout_by_section(qa_dir: pathlib.Path, qa_report: dict[str, Any]) -> dict[tuple, dict]:
  """Held-out token F1 before / after per (doc_id, section), from heldout_answers.json."""
  answers_file = qa_dir / workdir_layout.QA_HELDOUT_ANSWERS
  spec = (qa_report.get("config") or {}).get("heldout_path", "")
  if not answers_file.exists() or not spec:
    return {}
  path = paths.resolve_data_path(spec)
  if not path.is_file():
    return {}
  where = {}
  for line in path.read_text(encoding="utf-8").splitlines():
    if line.strip():
      row = json.loads(line)
      where[row.get("question", "")] = _section_key(row.get("doc_id", ""), row.get("section", ""))
  answers = json.loads(answers_file.read_text(encoding="utf-8"))
  out: dict[tuple, dict] = {}
  for when in ("before", "after"):
    for a in answers.get(when) or []:
      key = where.get(a.get("question"))
      if key is not None:
        out.setdefault(key, {}).setdefault(when, []).append(float(a.get("f1", 0.0)))
  return {k: {w: sum(v) / len(v) for w, v in d.items()} for k, d in out.items()}


def _qa_plot(qa_dir: pathlib.Path, qa_report: dict[str, Any],
             out_dir: pathlib.Path) -> list[tuple]:
  panels = []
  metrics_file = qa_dir / workdir_layout.QA_METRICS
  if metrics_file.exists():
    rows = [r for r in read_metrics(str(metrics_file)) if "loss" in r and "step" in r]
    if rows:
      panels.append({"series": {"train loss": ([r["step"] for r in rows],
                                               [r["loss"] for r in rows])},
                     "title": "Q&A fine-tuning loss", "xlabel": "step", "ylabel": "loss",
                     "integer_x": True})
  traces_file = qa_dir / workdir_layout.QA_TRACES
  traces = []
  if traces_file.exists():
    traces = [json.loads(line) for line in traces_file.read_text(encoding="utf-8").splitlines()
              if line.strip()]
  if traces:
    idx = [t["section_index"] + 1 for t in traces]
    panels.append({"series": {
        "Q&A loss before section": (idx, [t.get("qa_loss_before") for t in traces],
                                    {"linestyle": ":"}),
        "Q&A loss after section": (idx, [t.get("qa_loss_after") for t in traces])},
        "title": "Loss on each section's Q&A (trained questions)",
        "xlabel": "section (training order)", "ylabel": "masked loss", "integer_x": True})
    f1 = {"trained questions, after the section": (idx, [
        _mean([closed_book.token_f1(q["after"], q["gold"]) for q in t.get("questions", [])])
        for t in traces])}
    heldout = _heldout_by_section(qa_dir, qa_report)
    keys = [_section_key(t.get("doc_id", ""), t.get("section", "")) for t in traces]
    if any(k in heldout for k in keys):
      for when, style in (("before", {"linestyle": ":"}), ("after", {})):
        f1[f"held-out questions, {when} training"] = (
            idx, [heldout.get(k, {}).get(when) for k in keys], {"marker": "s", **style})
    panels.append({"series": f1, "title": "Answer token F1 per section",
                   "xlabel": "section (training order)", "ylabel": "token F1",
                   "ylim": (-0.02, 1.02), "integer_x": True})
  if not panels:
    return []
  path = plots.panel_plot(panels, out_dir / "qa_tune_sections.png")
  if not traces:  # a shuffled run (the recall recipe) has no per-section traces
    return [(path, "Q&A fine-tuning: training loss per step.")]
  return [(path, "Section-wise Q&A fine-tuning: training loss per step; per section the loss "
                 "on its Q&A before and after its updates, and the token F1 of greedy answers "
                 "(the section's traced questions after its updates; held-out questions of "
                 "that section, closed book, before and after the whole run).")]


def _mean(values: list[float]) -> Optional[float]:
  return sum(values) / len(values) if values else None


def extraction_rows(stages: dict[str, Any]) -> list[tuple[str, dict[str, Optional[float]]]]:
  """The pipeline's extraction rows: majority (on the dense draw), then each stage x shot.

  Args:
    stages: stage name -> report; 'extraction_<stage key>' holds that model's evaluate report.

  Returns:
    (row label, scores) pairs in pipeline order; empty when no extraction stage ran.
  """
  rows = []
  for key, label in STAGE_ROWS:
    ext = (stages.get(f"extraction_{key}") or {}).get("extraction")
    if not ext:
      continue
    if not rows and "majority" in ext:
      # Predicting nothing scores 0 on every span measure, overlap included.
      rows.append(("majority 'no'", {k: ext["majority"].get(k, 0.0)
                                     for k, _ in EXTRACTION_COLUMNS}))
    shots = sorted(int(k.split("_")[0]) for k in ext if k.endswith("_shot"))
    for shot in shots:
      rows.append((f"{label} {shot}-shot", extraction_scores(ext, shot)))
  return rows


def _extraction_plot(stages: dict[str, Any], out_dir: pathlib.Path) -> list[tuple]:
  rows = extraction_rows(stages)
  if not rows:
    return []
  path = extraction_plot(rows, out_dir / "extraction_by_stage.png",
                         "SOFC-Exp extraction (dev) after each stage")
  return [(path, "SOFC-Exp extraction on the dev split per stage and shot count: detection "
                 "accuracy / F1 of 'yes', entity and slot span micro-F1 (exact and overlap "
                 "match); the majority baseline always answers 'no' and lists nothing.")]


def _tiling_plots(compress: dict[str, Any], compress_dir: pathlib.Path,
                  out_dir: pathlib.Path) -> list[tuple]:
  """Redraws the compress stage's tiling pictures with short titles and explains the count."""
  state_file = compress_dir / workdir_layout.COMPRESS_STREAM_STATE
  comp_config = (compress.get("config") or {}).get("compression")
  if not state_file.exists() or not comp_config:
    return [(png, "Tiling, tiles coloured by their kept rank.")
            for png in sorted(compress_dir.glob("tiling_*.png"))]
  cfg = as_compression_config(ml_collections.ConfigDict(comp_config))
  layouts = json.loads(state_file.read_text(encoding="utf-8")).get("layouts", {})
  shapes = {r["name"]: tuple(r["shape"]) for r in compress.get("matrices", []) if "shape" in r}
  out = []
  for name, ranks in layouts.items():
    if name not in shapes:
      continue
    tiling = streaming.tiling_for(name, shapes[name], cfg)
    bands = len(tiling.row_cuts) - 1
    per_band = [sum(1 for t in tiling.tiles if t[0] == tiling.row_cuts[b]) for b in range(bands)]
    short = "/".join(name.split("/")[:-1]) if name.endswith("/kernel") else name
    file = out_dir / f"tiling_{name.replace('/', '_')}.png"
    render_tiling_png(tiling, str(file), ranks,
                      title=f"{short}: {tiling.num_tiles} tiles")
    out.append((file, tiling_caption(name, shapes[name], cfg.tiling, cfg.tiles_per_matrix,
                                     tiling.num_tiles, per_band)))
  return out


def tiling_caption(name: str, shape: tuple[int, int], kind: str, target: int, tiles: int,
                   per_band: list[int]) -> str:
  """Says what a tiling picture shows and why its tile count differs from the target.

  Args:
    name: the matrix's param path.
    shape: (in, out).
    kind: 'penrose' | 'grid' | 'single'.
    target: tiles_per_matrix.
    tiles: tiles drawn.
    per_band: tiles in each row band.

  Returns:
    The caption text.
  """
  head = f"`{name}` ({shape[0]}x{shape[1]}), tiles coloured by their kept rank. "
  if kind == "single":
    return head + "tiling='single': one tile per matrix (plain per-matrix SVD)."
  counts = ", ".join(str(c) for c in per_band)
  text = (head + f"{tiles} tiles = {len(per_band)} row bands x ({counts}) tiles per band, for "
          f"tiles_per_matrix={target}. ")
  if kind == "penrose":
    bands = len(per_band)
    text += (f"Both counts are whole numbers: the rows are cut into about sqrt({target} x "
             f"{shape[0]} / {shape[1]}) = {math.sqrt(target * shape[0] / shape[1]):.2g} -> "
             f"{bands} bands (near-square tiles) and each band into about {target} / {bands} = "
             f"{target / bands:.2g} -> {per_band[0] if per_band else 0} tiles; each axis is an "
             "exact split into two golden-ratio lengths (no remainder tile) chosen near that "
             "count, so the total lands near the target (typically within 25 %), not on it.")
  return text


def make_plots(stages: dict[str, Any], workdir: pathlib.Path) -> list[tuple[pathlib.Path, str]]:
  """Every plot of report.md: stages, per-layer divergence, alignment, Q&A, tilings.

  Args:
    stages: stage name -> report.
    workdir: pipeline folder (plots go to DIR/plots; stage files are read from DIR/<stage>).

  Returns:
    (PNG path, caption) per plot written.
  """
  out_dir = workdir / "plots"
  summary = summarize(stages)
  return (_stage_plot(summary, out_dir) + _divergence_plot(stages["compress"], out_dir)
          + _align_plot(workdir / "align", stages["align"], out_dir)
          + _qa_plot(workdir / "qa_tune", stages["qa_tune"], out_dir)
          + _extraction_plot(stages, out_dir)
          + _tiling_plots(stages["compress"], workdir / "compress", out_dir))


def chat_command(model_dir: pathlib.Path, prompt: str) -> str:
  """The command that chats with a pipeline's final model.

  Args:
    model_dir: the final model folder.
    prompt: an example prompt.

  Returns:
    The shell command (the folder relative to the working directory when inside it); every
    argument shell-quoted, so a workdir with spaces or a prompt with quotes pastes as is.
  """
  rel = os.path.relpath(model_dir)
  where = rel if not rel.startswith("..") else str(model_dir)
  return shlex.join(["python", "-m", "experiments.generate", "--config=configs/generate.py",
                     f"--config.model={where}", f"--prompt={prompt}"])


def render_markdown(report: dict[str, Any], stages: dict[str, Any],
                    plot_files: list[tuple[pathlib.Path, str]], workdir: pathlib.Path) -> str:
  """The pipeline's report.md.

  Args:
    report: the pipeline report.
    stages: stage name -> report.
    plot_files: (PNG, caption) pairs to embed.
    workdir: pipeline folder (links are relative to it).

  Returns:
    Markdown text.
  """
  s = report["summary"]
  chat = report["chat"]
  final_dir = workdir / "qa_tune" / "model"
  eval_cfg = (stages["final"].get("config") or {})
  comp_eval = ((stages["compress"].get("config") or {}).get("eval") or {})
  lines = ["# penrose-jax pipeline report\n",
           f"Model: {stages['dense']['model']}  \nWall time: {report['wall_s']:.0f} s\n",
           "## Perplexity after each stage\n", headline_table(s),
           "Lower is better; 'x dense' divides by the dense model's perplexity on the same "
           f"windows. Dense, compressed and aligned: {comp_eval.get('max_windows', '?')} windows "
           f"of {comp_eval.get('window', '?')} tokens per set (compress / align stages); "
           f"Q&A-tuned: the final evaluation's {eval_cfg.get('max_windows', '?')} windows of "
           f"{eval_cfg.get('window', '?')} tokens, against the dense evaluation on those windows. "
           "demo_corpus is the packaged materials corpus the Q&A stage trains on; general_text "
           "is packaged general-English prose no stage trains on; sofc_dev and lambada need "
           "../shared.\n",
           f"## Chat: {chat['prompt']}\n",
           markdown.table(["model", "answer"],
                          [["dense", _one_line(chat.get("answer"))]]
                          + [[label, _one_line(chat["stage_answers"][stage])]
                             for stage, label in CHAT_ROWS
                             if stage in (chat.get("stage_answers") or {})]
                          + [["final (Q&A-tuned)", _one_line(chat.get("final_answer"))]]),
           "Chat with the final model (greedy; `--config.prompts_path=FILE.jsonl "
           "--workdir=DIR` answers a file of prompts into DIR/generations.jsonl):\n",
           "```\n" + chat_command(final_dir, chat["prompt"]) + "\n```\n",
           "## Compression\n",
           markdown.table(["params dense", "params stored", "param_ratio", "bytes dense",
                           "bytes stored", "hidden KL (final)"],
                          [[s["params_dense"], s["params_compressed"], s["param_ratio"],
                            s["bytes_dense"], s["bytes_compressed"], s["hidden_kl_compressed"]]]),
           "## KL alignment (validation windows: align.val_sources)\n",
           markdown.table(["metric", "before", "after"],
                          [["logit KL", s["logit_kl_before_align"], s["logit_kl_after_align"]],
                           ["hidden KL", s["hidden_kl_before_align"],
                            s["hidden_kl_after_align"]]]),
           f"## Q&A fine-tuning ({s.get('qa_mode') or '?'}, {s.get('qa_train_tokens')} train "
           "tokens; closed book)\n",
           markdown.table(["metric", "before", "after"],
                          [["held-out questions: log-likelihood ranking accuracy",
                            s["heldout_ll_accuracy_before"], s["heldout_ll_accuracy_after"]],
                           ["held-out questions: token F1 of greedy answers",
                            s["heldout_f1_before"], s["heldout_f1_after"]]]
                          + ([["self-test recall (held-out wordings of the taught facts)",
                               s.get("selftest_before"), s.get("selftest_after")]]
                             if s.get("selftest_after") is not None else [])),
           *_open_questions_lines(report.get("open_questions") or [],
                                  s.get("selftest_recalled_after")),
           *_warmup_lines(stages.get("warmup")),
           "## General benchmarks (forgetting)\n"]
  benches = sorted(set(s["accuracy_dense"]) | set(s["accuracy_final"]))
  lines.append(markdown.table(["benchmark", "dense model", "final model"],
                              [[b, s["accuracy_dense"].get(b), s["accuracy_final"].get(b)]
                               for b in benches]) if benches
               else "(no benchmark data found: ARC-Easy / PIQA / COPA need ../shared)\n")
  ext_rows = extraction_rows(stages)
  if ext_rows:
    ext = next(v["extraction"] for k, v in stages.items()
               if k.startswith("extraction_") and v.get("extraction"))
    lines += ["## SOFC-Exp extraction (dev split)\n", extraction_table(ext_rows),
              f"Sentences per task: {ext.get('sentences')} from {len(ext.get('articles', []))} "
              "dev articles, the same draw for every stage (docs/sofc_extraction.md). Detection "
              "by the log-likelihood of 'yes' vs 'no'; entities and slots by greedy answers "
              "parsed into spans, micro-F1 by exact and by overlap match.\n"]
  lines.append("## Plots\n")
  for path, caption in plot_files:
    lines.append(f"![{path.stem}]({path.relative_to(workdir)})\n\n{caption}\n")
  skipped = sorted(set(sum((v.get("skipped", []) for v in stages.values()), [])))
  if skipped:
    lines.append("## Skipped (data not found)\n" + "\n".join(f"- {m}" for m in skipped) + "\n")
  return "\n".join(lines)


def _open_questions_lines(rows: list[dict[str, Any]], recalled: Optional[dict]) -> list[str]:
  """report.md's open questions: self-test questions with the answers before / after."""
  if not rows:
    return []
  gold = lambda g: " / ".join(g) if isinstance(g, list) else g
  lines = ["## Open questions to the final model (self-test, held-out wordings)\n",
           markdown.table(["question", "gold", "before", "final model", "recalled"],
                          [[_one_line(r["question"]), _one_line(gold(r["gold"])),
                            _one_line(r["before"]), _one_line(r["after"]),
                            "yes" if r["recalled"] else "no"] for r in rows])]
  if recalled:
    lines.append("Facts recalled after training, per document: " + "; ".join(
        f"{doc} {text}" for doc, text in sorted(recalled.items())) + "\n")
  return lines


def _warmup_lines(warm: Optional[dict[str, Any]]) -> list[str]:
  """report.md's warm-up section (its perplexities are the table's dense / warmed rows)."""
  if not warm:
    return []
  return ["## Domain warm-up before compression\n",
          markdown.table(["documents", "epochs", "train tokens", "tokens/s", "learning rate",
                          "final loss"],
                         [[warm.get("documents"), warm.get("epochs"), warm.get("train_tokens"),
                           warm.get("tokens_per_s"), warm.get("learning_rate"),
                           warm.get("final_train_loss")]]),
          "Perplexity before / after: the 'dense' and 'warmed up' rows of the first table; "
          "compress and align start from / align to the warmed model.\n"]


def _one_line(text: Optional[str]) -> Optional[str]:
  if text is None:
    return None
  return " ".join(str(text).split()).replace("|", "\\|") or "(empty)"
