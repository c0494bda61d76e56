"""The `sweep` job: one job (compress | align | qa_tune) run under a list of config overrides.

A sweep config (configs/sweep_*.py) holds
  base        a full config of the swept job (e.g. configs/compress.get_config()),
  job         'compress' | 'align' | 'qa_tune',
  runs        [(name, {dotted.key: value, ...}), ...]: each run is a copy of `base` with these
              keys replaced; everything else is held fixed,
and optional presentation fields (see `sweep_report`): method_key, group_labels, columns,
plot_x, plot_y, bar_metrics, `results_dir` (copy of the outputs to commit), and
`time_budget_s` (0 = none): once this invocation has run that
long, no further run is started; the report covers the finished runs and lists the rest as not
run, and rerunning the command continues with them.

Workdir layout:
  runs/<name>/   the job's own workdir for that run (so the job's own resume works)
  compress/      align sweeps only: the compressed student shared by every run (made once, when
                 no run overrides a `compress.*` key and base.student is empty)
  model_cache/   the 'tiny' model, built once and shared by every run
  spectra_cache/ compress sweeps: pass-1 tile spectra shared by runs that differ only after
                 pass 1 (param_ratio, quantize, spectral coding; see compression.spectra_cache)
  dense_eval_cache.json  compress sweeps: the dense model's perplexity per window set
  results.csv    one row per finished run (rewritten atomically after each run)
  report.md      table, computed best-per-metric list, plots; report.json: the sweep's summary
  reading.md     optional, written by a person: included in report.md as its "Reading"
  plots/         PNGs

A run whose runs/<name>/report.json holds the same resolved config is not rerun, so an
interrupted sweep continues with the first unfinished run, and adding runs to a config only
runs the new ones.
"""

from __future__ import annotations

import csv
import io
import json
import pathlib
import re
import shutil
import time
from typing import Any, Callable, Mapping

import ml_collections

from penrose_jax.io import model_registry
from penrose_jax.jobs import align, compress, qa_tune
from penrose_jax.jobs import workdir as workdir_guard
from penrose_jax.reporting import report_json, sweep_report

JOBS: dict[str, Callable[[ml_collections.ConfigDict, pathlib.Path], dict]] = {
    "compress": compress.run, "align": align.run, "qa_tune": qa_tune.run}

# Config values written to results.csv besides the overridden keys (when present in base).
DEFAULT_COLUMNS = {
    "compress": ("model", "compression.method", "compression.tiling", "compression.whiten",
                 "compression.param_ratio", "compression.spectral", "compression.keep_energy",
                 "compression.tau", "compression.quantize"),
    "align": ("num_steps", "optimizer.learning_rate", "objective.weights.logit_kl",
              "objective.weights.hidden_kl", "trainable"),
    "qa_tune": ("model", "mode", "trainable", "steps_per_section", "batch_size", "seq_len",
                "learning_rate"),
}
# Report fields that are not per-run metrics (kept out of results.csv).
_NOT_METRICS = ("job", "config", "matrices", "checkpoint", "skipped", "workdir", "student",
                "teacher", "notes", "tiling_pictures", "calibration_sources", "row_counts",
                "hidden_kl_per_layer", "qa_pairs_by_source", "pairs_per_section_by_source",
                "spectra_reused_from", "eval_windows")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def make_sweep_config(base: ml_collections.ConfigDict, job: str,
                      runs: list[tuple[str, dict[str, Any]]], *, title: str = "",
                      description: str = "", method_key: tuple[str, ...] = (),
                      group_labels: Mapping[str, str] | None = None, plot_x: str = "",
                      plot_y: tuple[str, ...] = (), bar_metrics: tuple[str, ...] = (),
                      columns: tuple[str, ...] = (),
                      time_budget_s: float = 0.0) -> ml_collections.ConfigDict:
  """Builds a sweep config (what configs/sweep_*.py return).

  Args:
    base: full config of the swept job.
    job: 'compress' | 'align' | 'qa_tune'.
    runs: [(name, {dotted key: value})].
    title: report.md heading.
    description: a paragraph for report.md (what is varied, what is held fixed).
    method_key: config keys naming a run's method (one plotted line per method).
    group_labels: run name -> method label (overrides method_key).
    plot_x: results.csv column for the x axis of the x-vs-y plots ('' = none).
    plot_y: columns plotted against plot_x.
    bar_metrics: columns drawn as one bar per run.
    columns: config keys recorded in results.csv ('' = DEFAULT_COLUMNS of the job).
    time_budget_s: start no new run after this many seconds of the invocation (0 = no limit);
      a command-line override (--config.time_budget_s=3600) is the usual way to set it.

  Returns:
    The sweep ConfigDict.
  """
  config = ml_collections.ConfigDict()
  config.job = job
  config.base = base
  config.runs = [(name, dict(overrides)) for name, overrides in runs]
  config.title = title
  config.description = description
  config.method_key = tuple(method_key)
  # Pairs, not a dict: ConfigDict keys cannot hold the dots run names may have.
  config.group_labels = tuple(sorted(dict(group_labels or {}).items()))
  config.plot_x = plot_x
  config.plot_y = tuple(plot_y)
  config.bar_metrics = tuple(bar_metrics)
  config.columns = tuple(columns)
  config.time_budget_s = float(time_budget_s)
  # Folder (e.g. results/sweep_ratio) that receives results.csv, report.json/md, reading.md,
  # plots and tiling pictures after the sweep, to be committed; '' = none.
  config.results_dir = ""
  return config


def get_dotted(config: Any, key: str) -> Any:
  """Reads a dotted key ('compression.tiling') from a ConfigDict or nested mapping.

  Args:
    config: ConfigDict or dict.
    key: dotted path.

  Returns:
    The value.

  Raises:
    KeyError: naming the missing part.
  """
  node = config
  for part in key.split("."):
    if part not in node:
      raise KeyError(f"config has no key {key!r} (no {part!r})")
    node = node[part]
  return node


def apply_overrides(base: ml_collections.ConfigDict, overrides: Mapping[str, Any]
                    ) -> ml_collections.ConfigDict:
  """A copy of `base` with dotted keys replaced; every key must already exist in base.

  Args:
    base: the job config (not modified).
    overrides: dotted key -> value.

  Returns:
    The new ConfigDict.

  Raises:
    KeyError: an override names a key `base` does not have (typos fail before any work).
  """
  config = base.copy_and_resolve_references()
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      if part not in node:
        raise KeyError(f"override {key!r}: base config has no {part!r}")
      node = node[part]
    if leaf not in node:
      raise KeyError(f"override {key!r}: base config has no {leaf!r}")
    node[leaf] = value
  return config


def _normalized(config: Any) -> Any:
  """The config as report.json stores it (JSON round trip of build_report's 'config')."""
  return json.loads(json.dumps(report_json.build_report("", config, "", 0, {})["config"]))


def finished_report(directory: pathlib.Path, config: ml_collections.ConfigDict
                    ) -> dict[str, Any] | None:
  """The run's report when DIR/report.json exists with the same resolved config.

  Args:
    directory: the run's workdir.
    config: its resolved config.

  Returns:
    The report dict, or None when the run has to (re)run.
  """
  path = directory / "report.json"
  if not path.exists():
    return None
  report = json.loads(path.read_text())
  return report if _same_config(report.get("config"), _normalized(config)) else None


def _same_config(stored: Any, current: Any) -> bool:
  """Equal configs, where a key added to the configs after the run (absent from `stored`)
  counts as equal when its value is empty ('', 0, False, None, empty list/dict): such a field
  is off by construction, so the finished run is still what the config asks for."""
  if isinstance(stored, Mapping) and isinstance(current, Mapping):
    for key in set(stored) | set(current):
      if key not in stored:
        if current[key] not in ("", 0, False, None, [], {}):
          return False
      elif key not in current or not _same_config(stored[key], current[key]):
        return False
    return True
  return stored == current


def _check_sweep_config(config: ml_collections.ConfigDict) -> list[tuple[str, dict]]:
  if config.job not in JOBS:
    raise ValueError(f"config.job={config.job!r}; expected one of {sorted(JOBS)}")
  runs = [(str(name), dict(overrides or {})) for name, overrides in config.runs]
  if not runs:
    raise ValueError("config.runs is empty")
  names = [name for name, _ in runs]
  for name in names:
    if not _RUN_NAME.match(name):
      raise ValueError(f"run name {name!r} is not a safe folder name ([A-Za-z0-9_.+-])")
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise ValueError(f"run names must be unique; repeated: {duplicates}")
  for name, overrides in runs:  # fail on a typo before hours of earlier runs
    apply_overrides(config.base, overrides)
  return runs


def _share_tiny_model(base: ml_collections.ConfigDict, cache_dir: pathlib.Path
                      ) -> ml_collections.ConfigDict:
  """Replaces model specs 'tiny' by one folder built once, so all runs use the same files."""
  keys = [k for k in ("model", "teacher", "student", "compress.model")
          if _has(base, k) and get_dotted(base, k) == "tiny"]
  if not keys:
    return base
  tiny = cache_dir / "tiny"
  if not model_registry.is_model_checkpoint(tiny):
    model_registry.build_tiny_model(tiny)
  return apply_overrides(base, {k: str(tiny) for k in keys})


def _has(config: Any, key: str) -> bool:
  try:
    get_dotted(config, key)
  except KeyError:
    return False
  return True


def _shared_student(base: ml_collections.ConfigDict, runs: list[tuple[str, dict]],
                    workdir: pathlib.Path) -> ml_collections.ConfigDict:
  """Align sweeps: compresses once into DIR/compress and points every run's student at it."""
  if base.student or "compress" not in base:
    return base
  if any(k.startswith("compress.") or k in ("student", "teacher") for _, o in runs for k in o):
    return base  # runs differ in what they compress: each run compresses in its own folder
  directory = workdir / "compress"
  if finished_report(directory, base.compress) is None:
    print(f"[sweep] compressing the shared student -> {directory}", flush=True)
    compress.run(base.compress, directory)
  teacher = base.teacher or base.compress.model
  return apply_overrides(base, {"student": str(directory / "model"), "teacher": teacher})


def _reuse_sibling_cache(job: str, run_dir: pathlib.Path, runs_dir: pathlib.Path) -> None:
  """qa_tune: copies a sibling's eval_before.json (the job checks its key and recomputes on a
  mismatch), so the shared before-training evaluation runs once per sweep."""
  if job != "qa_tune" or (run_dir / "eval_before.json").exists():
    return
  for sibling in sorted(runs_dir.glob("*/eval_before.json")):
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sibling, run_dir / "eval_before.json")
    return


def flatten_metrics(report: Mapping[str, Any]) -> dict[str, Any]:
  """Scalar metrics of a job report, one level of dicts flattened as 'key.sub'.

  Args:
    report: a job's report.json dict.

  Returns:
    Ordered {column: scalar}; lists, nested dicts and bookkeeping fields are left out.
  """
  out: dict[str, Any] = {}
  scalar = (int, float, str, bool, type(None))
  for key, value in report.items():
    if key in _NOT_METRICS:
      continue
    if isinstance(value, scalar):
      out[key] = value
    elif isinstance(value, Mapping):
      for sub, inner in value.items():
        if isinstance(inner, scalar):
          out[f"{key}.{sub}"] = inner
  return out


def result_row(name: str, overrides: Mapping[str, Any], config: ml_collections.ConfigDict,
               report: Mapping[str, Any], columns: list[str]) -> dict[str, Any]:
  """One results.csv row: run name, overridden keys, config columns, the report's metrics.

  Args:
    name: run name.
    overrides: the run's overrides (dotted keys).
    config: the run's resolved config.
    report: the run's report.
    columns: further dotted config keys to record.

  Returns:
    Ordered {column: value}.
  """
  row: dict[str, Any] = {"run": name}
  for key in list(overrides) + [c for c in columns if c not in overrides]:
    if _has(config, key):
      value = get_dotted(config, key)
      row[key] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
  for key, value in flatten_metrics(report).items():
    row.setdefault(key, value)
  return row


def results_csv_text(rows: list[dict[str, Any]]) -> str:
  """CSV text of rows with the union of their columns (first-seen order; missing cells empty).

  Args:
    rows: result rows.

  Returns:
    CSV text.
  """
  header: list[str] = []
  for row in rows:
    header += [k for k in row if k not in header]
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=header, restval="", lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: "" if v is None else v for k, v in row.items()})
  return buffer.getvalue()


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
  """Runs every run of the sweep (skipping finished ones) and writes CSV, report and plots.

  Args:
    config: a sweep config (see module docstring and configs/sweep_*.py).
    workdir: output folder (rerun to continue an interrupted sweep).

  Returns:
    The sweep's report dict (also DIR/report.json).
  """
  start = time.time()
  runs = _check_sweep_config(config)
  workdir = pathlib.Path(workdir).resolve()
  # Each run records its config in its own folder; a changed one is moved aside below.
  with workdir_guard.claim("sweep", config, workdir, record=False):
    return _run_claimed(config, workdir, runs, start)


def _run_claimed(config: ml_collections.ConfigDict, workdir: pathlib.Path, runs: list,
                 start: float) -> dict[str, Any]:
  """The sweep after its workdir is claimed (see `run`)."""
  runs_dir = workdir / "runs"
  runs_dir.mkdir(parents=True, exist_ok=True)
  base = _share_tiny_model(config.base, workdir / "model_cache")
  if config.job == "align":
    base = _shared_student(base, runs, workdir)
  columns = list(config.get("columns") or DEFAULT_COLUMNS[config.job])
  rows, reports, statuses = [], {}, {}
  budget = float(config.get("time_budget_s") or 0.0)
  for index, (name, overrides) in enumerate(runs):
    run_config = apply_overrides(base, overrides)
    run_dir = runs_dir / name
    report = finished_report(run_dir, run_config)
    if report is None and budget > 0 and time.time() - start >= budget:
      statuses[name] = "not run (time budget)"
      print(f"[sweep {index + 1}/{len(runs)}] {name}: not started, time budget of {budget:.0f} s "
            "used (rerun to continue)", flush=True)
      continue
    if report is not None:
      statuses[name] = "reused"
      print(f"[sweep {index + 1}/{len(runs)}] {name}: finished before, reusing", flush=True)
    else:
      print(f"[sweep {index + 1}/{len(runs)}] {name}: {config.job} {overrides}", flush=True)
      if workdir_guard.holds_results(run_dir) and workdir_guard.changes(run_config, run_dir):
        workdir_guard.move_run_aside(run_dir, f"sweep {name}")
      _reuse_sibling_cache(config.job, run_dir, runs_dir)
      t0 = time.time()
      # Compress runs that differ only after pass 1 (ratio, quantization, spectral coding)
      # share their pass-1 spectra through DIR/spectra_cache.
      extra = {"spectra_cache_dir": workdir / "spectra_cache",
               "dense_eval_cache": workdir / "dense_eval_cache.json"} \
          if config.job == "compress" else {}
      report = JOBS[config.job](run_config, run_dir, **extra)
      statuses[name] = "ran"
      print(f"[sweep {index + 1}/{len(runs)}] {name}: done in {time.time() - t0:.0f} s",
            flush=True)
    reports[name] = report
    rows.append(result_row(name, overrides, run_config, report, columns))
    report_json.write_text_atomic(workdir / "results.csv", results_csv_text(rows))
  plot_files = sweep_report.make_plots(config, rows, reports, workdir)
  best = sweep_report.best_per_metric(rows, sweep_report.main_columns(config.job, rows))
  metrics = {"sweep_job": config.job, "runs": [name for name, _ in runs], "status": statuses,
             "best": best, "results_csv": "results.csv",
             "plots": [str(p.relative_to(workdir)) for p in plot_files]}
  model = next((str(get_dotted(base, k)) for k in ("model", "teacher", "compress.model")
                if _has(base, k) and get_dotted(base, k)), "")
  report = report_json.build_report("sweep", config, model, time.time() - start, metrics)
  report_json.write_json_atomic(workdir / "report.json", report)
  report_json.write_text_atomic(workdir / "report.md", sweep_report.render_markdown(
      config, rows, reports, best, plot_files, workdir, report["wall_s"]))
  print(f"[sweep] wrote {workdir / 'report.md'} and {workdir / 'results.csv'} "
        f"({report['wall_s']:.0f} s)", flush=True)
  if config.get("results_dir"):
    pictures = [runs_dir / name / pic for name, r in reports.items()
                for pic in r.get("tiling_pictures") or () if (runs_dir / name / pic).is_file()]
    written = sweep_report.publish(workdir, pathlib.Path(config.results_dir), pictures)
    print(f"[sweep] copied {len(written)} files to {config.results_dir}", flush=True)
  return report
