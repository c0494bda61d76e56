"""report.md and plots of a sweep (penrose_jax/jobs/sweep.py).

Presentation fields a sweep config may set (all optional):
  method_key    dotted config keys whose values name a run's method (one line per method in
                the x-vs-y plots), e.g. ('compression.tiling', 'compression.whiten')
  group_labels  (run name, method label) pairs, overriding method_key for those runs
  plot_x        results.csv column on the x axis ('' = no x-vs-y plots), e.g. 'param_ratio'
  plot_y        columns plotted against plot_x, e.g. ('ppl_compressed', 'hidden_kl')
  bar_metrics   columns drawn as one bar per run
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any, Mapping, Sequence

import numpy as np

from penrose_jax.reporting import markdown, plots, report_json, workdir_layout

# Headline columns of report.md per swept job (others are in results.csv).
MAIN_COLUMNS = {
    "compress": ("param_ratio", "bytes_compressed", "ppl_compressed", "hidden_kl", "logit_kl",
                 "wall_s"),
    "align": ("logit_kl_before", "logit_kl_after", "hidden_kl_before", "hidden_kl_after",
              "top1_agreement_after", "ppl_after.*", "wall_s"),
    "qa_tune": ("heldout_ll_accuracy_before", "heldout_ll_accuracy_after", "heldout_f1_before",
                "heldout_f1_after", "exam_accuracy_sum_before", "exam_accuracy_sum_after",
                "exam_accuracy_mean_before", "exam_accuracy_mean_after", "exam_contains_after",
                "general_accuracy_before.*", "general_accuracy_after.*", "train_tokens",
                "input_tokens", "final_train_loss", "train_wall_s", "wall_s"),
}
_HIGHER_IS_BETTER = ("accuracy", "_em", "f1", "agreement", "tokens_per_s")
_LOWER_IS_BETTER = ("ppl", "kl", "loss", "js", "bytes", "params_compressed", "param_ratio",
                    "wall_s", "peak_rss")


def main_columns(job: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
  """The headline columns of a job's sweep table, 'prefix.*' expanded from the rows.

  Args:
    job: the swept job.
    rows: results.csv rows.

  Returns:
    Column names present in at least one row.
  """
  present: list[str] = []
  for row in rows:
    present += [k for k in row if k not in present]
  out = []
  for column in MAIN_COLUMNS[job]:
    if column.endswith(".*"):
      out += [k for k in present if k.startswith(column[:-1])]
    elif column in present:
      out.append(column)
  return out


def direction(metric: str) -> str | None:
  """'max' / 'min' when a metric's better direction is known from its name, else None.

  Args:
    metric: column name.

  Returns:
    'max', 'min' or None.
  """
  if any(p in metric for p in _HIGHER_IS_BETTER):
    return "max"
  if any(p in metric for p in _LOWER_IS_BETTER):
    return "min"
  return None


def _number(value: Any) -> float | None:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  value = float(value)
  return value if np.isfinite(value) else None


def best_per_metric(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]
                    ) -> list[dict[str, Any]]:
  """For each outcome metric with a known direction, the run with the best value (ties: first
  run); '*_before*' metrics are skipped.

  Args:
    rows: results.csv rows.
    metrics: columns to rank by.

  Returns:
    [{'metric', 'direction', 'run', 'value', 'runs_compared'}] for metrics with any values.
  """
  out = []
  for metric in metrics:
    if "_before" in metric:  # the shared starting point, not an outcome of the run
      continue
    sense = direction(metric)
    values = [(row["run"], _number(row.get(metric))) for row in rows]
    values = [(name, v) for name, v in values if v is not None]
    if sense is None or not values:
      continue
    pick = max if sense == "max" else min
    name, value = pick(values, key=lambda item: item[1])
    out.append({"metric": metric, "direction": sense, "run": name, "value": value,
                "runs_compared": len(values)})
  return out


def method_label(config: Any, run_name: str, run_config_row: Mapping[str, Any]) -> str:
  """A run's method label from group_labels or the method_key values in its row.

  Args:
    config: the sweep config.
    run_name: run name.
    run_config_row: its results.csv row (holds the method_key columns).

  Returns:
    Label such as 'penrose+whiten' ('all' when no method_key is set).
  """
  labels = dict(config.get("group_labels") or ())
  if run_name in labels:
    return str(labels[run_name])
  keys = list(config.get("method_key") or ())
  if not keys:
    return "all"
  parts = []
  for key in keys:
    value = run_config_row.get(key)
    short = key.split(".")[-1]
    if isinstance(value, bool):
      parts.append(short if value else f"no-{short}")
    else:
      parts.append(str(value))
  return "+".join(parts)


_DENSE_POINT = {"param_ratio": 1.0, "bytes_compressed": "bytes_dense"}


def _xy_plots(config: Any, rows: Sequence[Mapping[str, Any]], workdir: pathlib.Path
              ) -> list[pathlib.Path]:
  x_key = config.get("plot_x") or ""
  if not x_key:
    return []
  out = []
  for y_key in config.get("plot_y") or ():
    series: dict[str, tuple[list, list]] = {}
    for row in rows:
      x, y = _number(row.get(x_key)), _number(row.get(y_key))
      if x is None or y is None:
        continue
      xs, ys = series.setdefault(method_label(config, row["run"], row), ([], []))
      xs.append(x)
      ys.append(y)
    if not series:
      continue
    dense_x = _DENSE_POINT.get(x_key)
    dense_y = _number(rows[0].get(y_key.replace("compressed", "dense"))) if (
        y_key.startswith("ppl_compressed")) else None
    if isinstance(dense_x, str):
      dense_x = _number(rows[0].get(dense_x))
    if dense_x is not None and dense_y is not None:
      series["dense"] = ([dense_x], [dense_y])
      # The file the model was read from (e.g. Q4_1 GGUF): its own bytes at the dense quality.
      source_x = _number(rows[0].get("source_bytes")) if x_key == "bytes_compressed" else None
      if source_x is not None:
        series["source file"] = ([source_x], [dense_y])
    for label, (xs, ys) in list(series.items()):
      order = np.argsort(xs, kind="stable")
      series[label] = ([xs[i] for i in order], [ys[i] for i in order])
    file = workdir / "plots" / f"{x_key}_vs_{y_key}.png".replace("/", "_")
    out.append(plots.line_plot(series, file, f"{y_key} vs {x_key}", x_key, y_key,
                               logy=y_key.startswith("ppl") or "kl" in y_key))
  return out


def _read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
          if line.strip()]


def _curves(config: Any, reports: Mapping[str, Mapping[str, Any]], workdir: pathlib.Path
            ) -> list[pathlib.Path]:
  """Training loss per run (align / qa_tune) and Q&A loss per section (qa_tune traces)."""
  out = []
  metrics_file = workdir_layout.METRICS_BY_JOB.get(config.job)
  if metrics_file is None:
    return out
  loss = {}
  for name in reports:
    records = [r for r in _read_jsonl(workdir / "runs" / name / metrics_file)
               if "loss" in r and "step" in r]
    if records:
      loss[name] = ([r["step"] for r in records], [r["loss"] for r in records])
  if loss:
    out.append(plots.line_plot(loss, workdir / "plots" / "train_loss.png",
                               f"{config.job} training loss per run", "step", "loss",
                               markers=False))
  sections = {}
  for name in reports:
    traces = _read_jsonl(workdir / "runs" / name / workdir_layout.QA_TRACES)
    for when in ("before", "after"):
      points = [(t["section_index"], t.get(f"qa_loss_{when}")) for t in traces]
      points = [(i, v) for i, v in points if _number(v) is not None]
      if points:
        sections[f"{name} ({when})"] = ([i for i, _ in points], [v for _, v in points])
  if sections:
    out.append(plots.line_plot(sections, workdir / "plots" / "qa_loss_by_section.png",
                               "Q&A loss on each section's pairs, before / after its updates",
                               "section (reading order)", "masked answer loss"))
  # Learning curves (qa_tune with curve_points): exam accuracy at points inside each run.
  for key, label in (("exam_accuracy_mean", "mean"), ("exam_accuracy_sum", "summed")):
    curves = {name: ([p["train_tokens"] for p in report["exam_curve"]],
                     [p[key] for p in report["exam_curve"]])
              for name, report in reports.items() if len(report.get("exam_curve") or []) > 1}
    if curves:
      out.append(plots.line_plot(
          curves, workdir / "plots" / f"learning_curve_{key}.png",
          f"closed-book exam accuracy ({label} log-likelihood) during training",
          "training tokens", "exam accuracy"))
  return out


def make_plots(config: Any, rows: Sequence[Mapping[str, Any]],
               reports: Mapping[str, Mapping[str, Any]], workdir: pathlib.Path
               ) -> list[pathlib.Path]:
  """All plots of a sweep into DIR/plots (only those the runs have data for).

  Args:
    config: the sweep config.
    rows: results.csv rows, in run order.
    reports: run name -> the run's report.
    workdir: the sweep folder.

  Returns:
    Paths of the PNGs written.
  """
  out = _xy_plots(config, rows, workdir)
  per_layer = {name: r["hidden_kl_per_layer"] for name, r in reports.items()
               if r.get("hidden_kl_per_layer")}
  if per_layer and len({len(v) for v in per_layer.values()}) == 1:
    out.append(plots.heatmap(np.asarray(list(per_layer.values())),
                             workdir / "plots" / "hidden_kl_per_layer.png",
                             "Hidden-state KL per layer (compressed vs dense)", "layer", "run",
                             row_labels=list(per_layer)))
  for metric in config.get("bar_metrics") or ():
    values = {row["run"]: _number(row.get(metric)) for row in rows}
    values = {k: v for k, v in values.items() if v is not None}
    if values:
      out.append(plots.bar_chart(values, workdir / "plots" / f"bar_{metric}.png",
                                 metric, metric, log=direction(metric) == "min" and
                                 min(values.values()) > 0))
  return out + _curves(config, reports, workdir)


def render_markdown(config: Any, rows: Sequence[Mapping[str, Any]],
                    reports: Mapping[str, Mapping[str, Any]], best: Sequence[Mapping[str, Any]],
                    plot_files: Sequence[pathlib.Path], workdir: pathlib.Path,
                    wall_s: float) -> str:
  """The sweep's report.md: table per run, computed best runs, plots, tiling pictures.

  Args:
    config: the sweep config.
    rows: results.csv rows.
    reports: run name -> report.
    best: `best_per_metric` output.
    plot_files: PNGs to embed.
    workdir: the sweep folder (links are relative to it).
    wall_s: the sweep's wall time (this invocation).

  Returns:
    Markdown text.
  """
  overridden: list[str] = []
  for _, overrides in config.runs:
    overridden += [k for k in (overrides or {}) if k not in overridden]
  columns = main_columns(config.job, rows)
  grouped = bool(config.get("method_key") or config.get("group_labels"))
  headers = ["run"] + ["method"] * grouped + [k.split(".", 1)[-1] if k.count(".") > 1 else k
                                              for k in overridden] + columns
  table_rows = [[row["run"]] + [method_label(config, row["run"], row)] * grouped
                + [row.get(k) for k in overridden] + [row.get(k) for k in columns]
                for row in rows]
  lines = [f"# Sweep: {config.get('title') or config.job}\n",
           f"Job `{config.job}`, {len(rows)} of {len(config.runs)} runs finished, results in "
           "`results.csv` (every scalar metric of each run's report.json). This invocation took "
           f"{wall_s:.0f} s (finished runs are reused, not rerun).\n"]
  finished = {row["run"] for row in rows}
  not_run = [name for name, _ in config.runs if name not in finished]
  if not_run:
    lines.append(f"Not run yet ({len(not_run)}; the time budget ran out, rerun the same command "
                 "to continue): " + ", ".join(not_run) + "\n")
  if config.get("description"):
    lines.append(str(config.description).strip() + "\n")
  first = next(iter(reports.values()), {})
  dense = [(k, first.get(k)) for k in ("ppl_dense", "params_dense", "bytes_dense",
                                        "source_bytes") if first.get(k) is not None]
  if dense:
    lines.append("Dense reference: " + ", ".join(f"{k} {markdown.format_value(v)}"
                                                  for k, v in dense) + "\n")
  lines += ["## Runs\n", markdown.table(headers, table_rows)]
  reading = workdir / "reading.md"
  lines.append("## Reading\n")
  if reading.is_file():
    lines.append(reading.read_text(encoding="utf-8").strip() + "\n")
  else:
    lines.append(f"_Not written yet: put a person's reading of the table and plots in "
                 f"`{reading.name}` beside this report and rerun the sweep command (finished "
                 "runs are reused) to include it._\n")
  lines.append("Computed from results.csv, not hand-written (differences smaller than "
               "run-to-run noise mean nothing):\n")
  lines += [f"- best {b['metric']} ({'highest' if b['direction'] == 'max' else 'lowest'} of "
            f"{b['runs_compared']}): **{b['run']}** ({markdown.format_value(b['value'])})"
            for b in best] or ["- (no comparable metrics)"]
  lines.append("")
  if plot_files:
    lines.append("## Plots\n")
    lines += [f"![{p.stem}]({p.relative_to(workdir)})\n" for p in plot_files]
  pictures = [(name, pic) for name, r in reports.items() for pic in r.get("tiling_pictures") or ()]
  if pictures:
    lines.append("## Tiling pictures (tiles coloured by rank)\n")
    lines += [f"- {name}: [{pic}](runs/{name}/{pic})" for name, pic in pictures]
    lines.append("")
  skipped = sorted({m for r in reports.values() for m in r.get("skipped") or ()})
  if skipped:
    lines.append("## Skipped (data not found)\n" + "\n".join(f"- {m}" for m in skipped) + "\n")
  return "\n".join(lines)


# What a reader of a committed results folder needs; run folders (checkpoints) stay behind.
PUBLISHED_FILES = ("results.csv", "report.json", "report.md", "reading.md")


def publish(workdir: pathlib.Path, results_dir: pathlib.Path,
            extra_pngs: Sequence[pathlib.Path] = ()) -> list[pathlib.Path]:
  """Copies a sweep's table, reports and plots into a results folder meant to be committed.

  Args:
    workdir: the sweep folder.
    results_dir: destination (created); its files are replaced, others left alone.
    extra_pngs: further PNGs (e.g. a run's tiling pictures), copied under `pictures/`.

  Returns:
    The files written.
  """
  written = []
  sources = [workdir / name for name in PUBLISHED_FILES if (workdir / name).is_file()]
  sources += sorted((workdir / "plots").glob("*.png"))
  for src in list(sources) + list(extra_pngs):
    rel = src.relative_to(workdir) if src.parent.parent != workdir / "runs" else \
        pathlib.Path("pictures") / f"{src.parent.name}_{src.name}"
    dest = results_dir / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    if src.name == "report.md":  # tiling pictures move from runs/<run>/ to pictures/
      data = re.sub(rb"\(runs/([^/)]+)/([^/)]+\.png)\)", rb"(pictures/\1_\2)", data)
    report_json.write_file_atomic(dest, lambda handle, data=data: handle.write(data))
    written.append(dest)
  return written
