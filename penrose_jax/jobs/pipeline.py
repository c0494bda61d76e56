"""The `pipeline` job: the README's main job, the whole method end to end on the default model.

Stages (each skipped with a note when its config section is disabled): load the model and answer
a chat prompt; evaluate the dense model; then the later stages write their sections.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import ml_collections
from absl import logging

from penrose_jax.jobs import evaluate, model_source
from penrose_jax.models import generation
from penrose_jax.reporting import markdown, plots, report_json


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
  """Runs the pipeline and writes DIR/report.md, DIR/report.json and DIR/plots/*.png.

  Args:
    config: see configs/pipeline.py.
    workdir: output folder.

  Returns:
    The report dict.
  """
  start = time.time()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  loaded = model_source.load(config.model, cache_dir=workdir / "model_cache")
  logging.info("loaded %s in %.1fs", loaded.name, time.time() - start)
  answer = generation.chat(loaded.params, loaded.config, loaded.tokenizer, config.chat_prompt,
                           max_new_tokens=config.chat_max_new_tokens)
  print(f"[chat] {config.chat_prompt}\n{answer}", flush=True)
  dense = evaluate.evaluate_loaded(loaded, config.eval)
  print(f"[dense] ppl {dense['ppl']} accuracy {dense['accuracy']}", flush=True)
  stages = {"dense": dense}
  plot_paths = []
  if dense["ppl"]:
    plot_paths.append(plots.bar_chart(dense["ppl"], workdir / "plots" / "ppl_dense.png",
                                      "Perplexity of the dense model", "perplexity"))
  metrics = {"chat": {"prompt": config.chat_prompt, "answer": answer}, "stages": stages,
             "skipped": dense["skipped"]}
  report = report_json.build_report("pipeline", config, loaded.name, time.time() - start, metrics)
  report_json.write_json_atomic(workdir / "report.json", report)
  lines = [f"# penrose-jax pipeline report\n", f"Model: {loaded.name}\n",
           f"Wall time: {report['wall_s']:.1f} s\n", "## Chat\n",
           f"**Q:** {config.chat_prompt}\n\n**A:** {answer}\n", "## Dense model\n",
           markdown.table(["text set", "perplexity"], sorted(dense["ppl"].items())),
           markdown.table(["benchmark", "accuracy"], sorted(dense["accuracy"].items()))]
  for path in plot_paths:
    lines.append(f"![{path.stem}](plots/{path.name})\n")
  if dense["skipped"]:
    lines.append("## Skipped\n" + "\n".join(f"- {s}" for s in dense["skipped"]) + "\n")
  report_json.write_text_atomic(workdir / "report.md", "\n".join(lines))
  print(f"wrote {workdir / 'report.md'}", flush=True)
  return report
