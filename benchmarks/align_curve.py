"""Quality vs alignment tokens from an align run's metrics.jsonl (also for a run cut short).

Command (from the repo root, inside .venv), for the run in results/README.md:
  python benchmarks/align_curve.py --workdir=workdirs/align_uniform_0.8 \
      --student=workdirs/sweep_baseline/runs/uniform_0.8/model --out=results/align_curve
The align job itself writes DIR/align_curve.png and report.json["quality_curve"] when it ends;
this script rebuilds the curve when the run did not end (killed, or stopped to save time): it
measures the student before alignment and the teacher on the align config's validation windows
(configs/align.py: the same windows the run validated on) and reads the run's eval points.
Writes OUT/align_curve.png and OUT/align_curve.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs import align as align_config  # noqa: E402
from penrose_jax.alignment.align import make_alignment_eval  # noqa: E402
from penrose_jax.io import model_registry  # noqa: E402
from penrose_jax.jobs import align  # noqa: E402
from penrose_jax.reporting import report_json, workdir_layout  # noqa: E402
from penrose_jax.training.metrics_log import read_metrics  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="the align run's folder")
  parser.add_argument("--student", required=True, help="the compressed model it started from")
  parser.add_argument("--teacher", default="default")
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  config = align_config.get_config()
  student = model_registry.load(args.student)
  teacher = model_registry.load(args.teacher)
  windows, groups, _ = align.validation_windows(config, student.tokenizer)
  eval_fn = make_alignment_eval(teacher.params, student.config, windows,
                                align.alignment_config(config).objective, config.batch_size,
                                groups)
  before = eval_fn(student.params)
  teacher_val = {k: v for k, v in eval_fn(teacher.params).items() if k.startswith("ppl")}
  report = {**{f"{k}_before": v for k, v in before.items()}, "val_teacher": teacher_val}
  metrics = read_metrics(str(pathlib.Path(args.workdir) / workdir_layout.ALIGN_METRICS))
  curve = align.quality_curve(metrics, report, config.batch_size * config.window)
  out = pathlib.Path(args.out)
  align.plot_quality_curve(curve, out / "align_curve.png")
  report_json.write_json_atomic(out / "align_curve.json", {
      "curve": {k: {"tokens": xs, "ppl_over_teacher": ys} for k, (xs, ys) in curve.items()},
      "before": before, "val_teacher": teacher_val,
      "eval_points": [{k: v for k, v in r.items() if k == "step" or k.startswith("eval/")}
                      for r in metrics if any(k.startswith("eval/") for k in r)]})
  for name, (xs, ys) in curve.items():
    print(name, " ".join(f"{x:.0f}:{y:.2f}" for x, y in zip(xs, ys)))


if __name__ == "__main__":
  main()
