"""Ablation: KL alignment objective: none vs hidden-state KL only vs logit KL only vs both.

Command (from the repo root):
  python -m experiments.sweep --config=configs/sweep_alignment.py \
      --workdir=workdirs/sweep_alignment
  python -m experiments.sweep --config=configs/sweep_alignment.py:quick \
      --workdir=/tmp/sweep_alignment_q

Compresses SmolLM2-135M once (configs/compress.py: Penrose, whitened, param_ratio 0.6) into
DIR/compress, then runs the `align` job from that student 4 times with the same data, steps,
optimizer and seed; only objective.weights change. The 'none' run is the align job with
num_steps=0 (the job handles 0 steps: no update is made, 'after' metrics equal 'before', and the
saved model is the compressed one), so every row is measured by the same code on the same
windows. Note: all runs keep the checkpoint with the best validation logit KL (the align job's
best_metric), also the hidden-KL-only run. Produces DIR/results.csv (logit / hidden KL, JS,
top-1 agreement before / after, perplexity before / after per text set, tokens/s, wall_s),
DIR/report.md, DIR/plots/ (bars of the after-metrics, training loss per run),
DIR/runs/<name>/. Time on the 2-core CPU machine (2026-11-24): 2,268 s for the 4 aligns
(none 157 s, 60-step runs 610-870 s, the slowest with the tests beside it) plus one compress
(~6-8 min; reused from sweep_tiling's identical penrose_w run for the README table).
quick (tiny model, 2 runs: none and both, 4 steps): measured 46 s inside the test run,
46-110 s as a command depending on the machine's load.
"""

import ml_collections

from configs import align as align_config
from configs.sweep_tiling import quick_compress_base
from penrose_jax.jobs.sweep import make_sweep_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the alignment-objective sweep; `quick` runs 'none' and 'both' on the tiny model."""
  if arg not in ("", "quick"):
    raise ValueError(f"configs/sweep_alignment.py: unknown variant {arg!r}; expected '' or "
                     "'quick'")
  base = align_config.get_config(arg)
  if arg:
    base.compress = quick_compress_base()
    base.num_steps = 4
    base.eval_every = 2
    base.checkpoint_every = 2
    base.eval.max_windows = 2
    base.eval.text_sets = ml_collections.ConfigDict({"demo_corpus": "package:demo_corpus"})
  runs = [("none", {"num_steps": 0}),
          ("hidden_kl", {"objective.weights.logit_kl": 0.0, "objective.weights.hidden_kl": 1.0}),
          ("logit_kl", {"objective.weights.logit_kl": 1.0, "objective.weights.hidden_kl": 0.0}),
          ("both", {"objective.weights.logit_kl": 1.0, "objective.weights.hidden_kl": 1.0})]
  if arg:
    runs = [runs[0], runs[3]]
  return make_sweep_config(
      base, "align", runs, title="alignment objective",
      description="One compressed student, aligned with each objective for the same number of "
                  "updates on the same windows; 'none' makes no update.",
      bar_metrics=("logit_kl_after", "hidden_kl_after", "top1_agreement_after"))
