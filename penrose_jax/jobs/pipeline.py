"""The `pipeline` job: the README's main job, the whole method end to end.

Stages, each in its own subfolder of the workdir and each the same job a user can run alone:
  dense/     load the model, answer a chat prompt, evaluate it (perplexity + benchmarks)
  compress/  jobs.compress (Penrose-tiled low-rank blocks, whitened, global budget)
  align/     jobs.align (KL alignment of the compressed model to the dense one)
  qa_tune/   jobs.qa_tune (section-wise Q&A fine-tuning on the demo corpus)
  final/     evaluation of the final model, same sets as dense/
Then DIR/report.md (tables + plots) and DIR/report.json. A stage whose report.json exists with
the same config is not rerun, so an interrupted pipeline continues where it stopped.
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
from penrose_jax.jobs import align, compress, evaluate, model_source, qa_tune
from penrose_jax.models import generation
from penrose_jax.reporting import markdown, plots, report_json
from penrose_jax.training.metrics_log import read_metrics

STAGES = ("compress", "align", "qa_tune")


def _same_config(report_path: pathlib.Path, config: ml_collections.ConfigDict) -> bool:
  if not report_path.exists():
    return False
  stored = json.loads(report_path.read_text()).get("config")
  return stored == json.loads(json.dumps(report_json.build_report("", config, "", 0, {})["config"]))


def run_stage(name: str, fn: Callable[[Any, pathlib.Path], dict], config: Any,
              directory: pathlib.Path) -> dict[str, Any]:
  """Runs one stage's job, or reuses its report when it already finished with this config.

  Args:
    name: stage name (for messages).
    fn: the job's run(config, workdir).
    config: the stage's config.
    directory: the stage's workdir.

  Returns:
    The stage's report dict.
  """
  report_path = directory / "report.json"
  if _same_config(report_path, config):
    print(f"[{name}] already finished: reusing {report_path}", flush=True)
    return json.loads(report_path.read_text())
  print(f"[{name}] running -> {directory}", flush=True)
  start = time.time()
  report = fn(config, directory)
  # Drop the stage's compiled programs: stages share no compiled function, and in one process
  # the executables of the compressed model's train steps piled up until the Q&A stage's
  # compile ran out of memory (18 GB RSS on the 24 GB machine).
  jax.clear_caches()
  gc.collect()
  print(f"[{name}] done in {time.time() - start:.0f} s", flush=True)
  return report


def _evaluate_stage(spec: str, eval_config: ml_collections.ConfigDict, directory: pathlib.Path,
                    cache_dir: pathlib.Path) -> dict[str, Any]:
  def job(cfg, workdir):
    start = time.time()
    loaded = model_source.load(spec, cache_dir=cache_dir)
    metrics = evaluate.evaluate_loaded(loaded, cfg)
    report = report_json.build_report("evaluate", cfg, loaded.name, time.time() - start, metrics)
    report_json.write_json_atomic(pathlib.Path(workdir) / "report.json", report)
    return report
  return run_stage(f"evaluate {directory.name}", job, eval_config, directory)


def _stage_configs(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, Any]:
  """Wires each stage's input to the previous stage's output (derived here, not in get_config)."""
  compress_cfg = ml_collections.ConfigDict(config.compress.to_dict())
  compress_cfg.model = config.model
  align_cfg = ml_collections.ConfigDict(config.align.to_dict())
  align_cfg.student = str(workdir / "compress" / "model")
  align_cfg.teacher = config.model
  align_cfg.eval.compress_report = str(workdir / "compress" / "report.json")
  qa_cfg = ml_collections.ConfigDict(config.qa_tune.to_dict())
  qa_cfg.model = str(workdir / "align" / "model")
  return {"compress": compress_cfg, "align": align_cfg, "qa_tune": qa_cfg}


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
  workdir.mkdir(parents=True, exist_ok=True)
  cache_dir = workdir / "model_cache"
  if config.model == "tiny":  # build once so every stage sees the same files
    if not model_source.is_model_checkpoint(cache_dir / "tiny"):
      model_source.build_tiny_model(cache_dir / "tiny")
    config = ml_collections.ConfigDict(config.to_dict())
    config.model = str(cache_dir / "tiny")
  loaded = model_source.load(config.model, cache_dir=cache_dir)
  answer = generation.chat(loaded.params, loaded.config, loaded.tokenizer, config.chat_prompt,
                           max_new_tokens=config.chat_max_new_tokens)
  print(f"[chat] {config.chat_prompt}\n{answer}", flush=True)
  del loaded
  stages: dict[str, Any] = {"dense": _evaluate_stage(config.model, config.eval, workdir / "dense",
                                                     cache_dir)}
  configs = _stage_configs(config, workdir)
  jobs = {"compress": compress.run, "align": align.run, "qa_tune": qa_tune.run}
  for name in STAGES:
    stages[name] = run_stage(name, jobs[name], configs[name], workdir / name)
  stages["final"] = _evaluate_stage(str(workdir / "qa_tune" / "model"), config.eval,
                                    workdir / "final", cache_dir)
  summary = summarize(stages)
  plot_files = make_plots(stages, workdir)
  metrics = {"chat": {"prompt": config.chat_prompt, "answer": answer}, "summary": summary,
             "stages": {k: {kk: vv for kk, vv in v.items() if kk not in ("config", "matrices")}
                        for k, v in stages.items()},
             "plots": [str(p.relative_to(workdir)) for p in plot_files]}
  report = report_json.build_report("pipeline", config, stages["compress"]["model"],
                                    time.time() - start, metrics)
  report_json.write_json_atomic(workdir / "report.json", report)
  report_json.write_text_atomic(workdir / "report.md",
                                render_markdown(report, stages, plot_files, workdir))
  print(f"wrote {workdir / 'report.md'} ({report['wall_s']:.0f} s)", flush=True)
  return report


def summarize(stages: dict[str, Any]) -> dict[str, Any]:
  """The headline numbers of every stage in one flat dict.

  Args:
    stages: stage name -> report.

  Returns:
    Flat summary (perplexities per stage and set, compression, KL, Q&A and benchmark scores).
  """
  comp, al, qa = stages["compress"], stages["align"], stages["qa_tune"]
  # Dense and compressed rows come from the compress report: the same windows for both.
  ppl = {"dense": comp.get("ppl_dense_by_set", {}),
         "compressed": comp.get("ppl_compressed_by_set", {}),
         "aligned": al.get("ppl_after", {}), "qa_tuned": stages["final"]["ppl"]}
  return {
      "param_ratio": comp["param_ratio"], "params_dense": comp["params_dense"],
      "params_compressed": comp["params_compressed"], "bytes_compressed": comp["bytes_compressed"],
      "bytes_dense": comp["bytes_dense"], "hidden_kl_compressed": comp.get("hidden_kl"),
      "logit_kl_before_align": al.get("logit_kl_before"),
      "logit_kl_after_align": al.get("logit_kl_after"),
      "hidden_kl_before_align": al.get("hidden_kl_before"),
      "hidden_kl_after_align": al.get("hidden_kl_after"),
      "ppl": ppl,
      "heldout_ll_accuracy_before": qa.get("heldout_ll_accuracy_before"),
      "heldout_ll_accuracy_after": qa.get("heldout_ll_accuracy_after"),
      "heldout_f1_before": qa.get("heldout_f1_before"),
      "heldout_f1_after": qa.get("heldout_f1_after"),
      "accuracy_dense": stages["dense"]["accuracy"], "accuracy_final": stages["final"]["accuracy"],
  }


def make_plots(stages: dict[str, Any], workdir: pathlib.Path) -> list[pathlib.Path]:
  """Perplexity per stage, per-layer hidden KL, alignment and Q&A training curves.

  Args:
    stages: stage name -> report.
    workdir: pipeline folder (plots go to DIR/plots).

  Returns:
    Paths of the PNGs written.
  """
  out = []
  ppl = summarize(stages)["ppl"]
  names = sorted(set().union(*[set(v) for v in ppl.values()]))
  series = {n: ([i for i, s in enumerate(ppl) if n in ppl[s]],
                [ppl[s][n] for s in ppl if n in ppl[s]]) for n in names}
  if series:
    path = plots.line_plot(series, workdir / "plots" / "ppl_by_stage.png",
                           "Perplexity after each stage (0 dense, 1 compressed, 2 aligned, "
                           "3 Q&A-tuned)", "stage", "perplexity", logy=True)
    out.append(path)
  per_layer = stages["compress"].get("hidden_kl_per_layer")
  if per_layer:
    out.append(plots.line_plot({"compressed vs dense": (list(range(len(per_layer))), per_layer)},
                               workdir / "plots" / "hidden_kl_per_layer.png",
                               "Hidden-state KL per layer after compression", "layer",
                               "KL(softmax(h_dense) || softmax(h_comp))", logy=True))
  for name, file, title in (("align", workdir / "align" / "train" / "metrics.jsonl",
                             "Alignment loss"),
                            ("qa_tune", workdir / "qa_tune" / "metrics.jsonl",
                             "Q&A fine-tuning loss")):
    if file.exists():
      rows = [r for r in read_metrics(str(file)) if "loss" in r and "step" in r]
      if rows:
        out.append(plots.line_plot({name: ([r["step"] for r in rows], [r["loss"] for r in rows])},
                                   workdir / "plots" / f"{name}_loss.png", title, "step", "loss",
                                   markers=False))
  return out


def render_markdown(report: dict[str, Any], stages: dict[str, Any], plot_files: list,
                    workdir: pathlib.Path) -> str:
  """The pipeline's report.md.

  Args:
    report: the pipeline report.
    stages: stage name -> report.
    plot_files: PNGs to embed.
    workdir: pipeline folder (links are relative to it).

  Returns:
    Markdown text.
  """
  s = report["summary"]
  chat = report["chat"]
  lines = ["# penrose-jax pipeline report\n",
           f"Model: {stages['dense']['model']}  \nWall time: {report['wall_s']:.0f} s\n",
           "## Chat (dense model)\n", f"**Q:** {chat['prompt']}  \n**A:** {chat['answer']}\n",
           "## Compression\n",
           markdown.table(["params dense", "params stored", "param_ratio", "bytes dense",
                           "bytes stored", "hidden KL (final)"],
                          [[s["params_dense"], s["params_compressed"], s["param_ratio"],
                            s["bytes_dense"], s["bytes_compressed"], s["hidden_kl_compressed"]]]),
           "## Perplexity after each stage\n"]
  sets = sorted(set().union(*[set(v) for v in s["ppl"].values()]))
  lines.append(markdown.table(["stage"] + sets,
                              [[stage] + [vals.get(n) for n in sets]
                               for stage, vals in s["ppl"].items()]))
  lines += ["## KL alignment (validation windows: align.val_sources)\n",
            markdown.table(["metric", "before", "after"],
                           [["logit KL", s["logit_kl_before_align"], s["logit_kl_after_align"]],
                            ["hidden KL", s["hidden_kl_before_align"],
                             s["hidden_kl_after_align"]]]),
            "## Section-wise Q&A fine-tuning (held-out questions, closed book)\n",
            markdown.table(["metric", "before", "after"],
                           [["log-likelihood ranking accuracy", s["heldout_ll_accuracy_before"],
                             s["heldout_ll_accuracy_after"]],
                            ["token F1 of greedy answers", s["heldout_f1_before"],
                             s["heldout_f1_after"]]]),
            "## General benchmarks (forgetting)\n"]
  benches = sorted(set(s["accuracy_dense"]) | set(s["accuracy_final"]))
  lines.append(markdown.table(["benchmark", "dense model", "final model"],
                              [[b, s["accuracy_dense"].get(b), s["accuracy_final"].get(b)]
                               for b in benches]) if benches else "(no benchmark data found)\n")
  lines.append("## Plots\n")
  for path in plot_files:
    lines.append(f"![{path.stem}]({path.relative_to(workdir)})\n")
  for png in sorted((workdir / "compress").glob("tiling_*.png")):
    lines.append(f"![{png.stem}]({png.relative_to(workdir)})\n")
  skipped = sorted(set(sum((v.get("skipped", []) for v in stages.values()), [])))
  if skipped:
    lines.append("## Skipped (data not found)\n" + "\n".join(f"- {m}" for m in skipped) + "\n")
  return "\n".join(lines)
