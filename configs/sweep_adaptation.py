"""Ablation: section-wise Q&A fine-tuning vs one pass over the documents vs no training.

Command (from the repo root):
  python -m experiments.sweep --config=configs/sweep_adaptation.py \
      --workdir=workdirs/sweep_adaptation
  python -m experiments.sweep --config=configs/sweep_adaptation.py:quick \
      --workdir=/tmp/sweep_adaptation_q

Runs the `qa_tune` job (configs/qa_tune.py: SmolLM2-135M-Instruct 'default', LoRA r=8, all 13
demo documents, here 2 updates per section and one traced question per section) with mode
sectionwise | onepass | none. The trainer gives onepass the same token budget as sectionwise
(sections x steps_per_section updates of batch_size x seq_len tokens); none makes no update.
The before-training evaluation is computed once and shared by the runs (the job's
eval_before.json cache, keyed by model, questions and eval settings). Produces DIR/results.csv
(held-out log-likelihood accuracy / EM / F1 before and after, general benchmark accuracy before
and after, train tokens, tokens/s, wall_s), DIR/report.md, DIR/plots/ (bars of the after
metrics, training loss per run, Q&A loss per section before / after its updates from
traces.jsonl), DIR/runs/<name>/. Time on the 2-core CPU machine (2026-11-24, another sweep
beside it): 3,006 s (sectionwise 2,074 s including the shared 270 s evaluation before
training, onepass 923 s, none 8 s), peak RSS 6.9 GiB; results in the README. quick (tiny
model, 2 runs: sectionwise and none, 1 document): measured 30 s inside the test run, ~40 s as
a command.
"""

import ml_collections

from configs import qa_tune as qa_tune_config
from penrose_jax.jobs.sweep import make_sweep_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the adaptation sweep; `quick` runs sectionwise and none on the tiny model."""
  if arg not in ("", "quick"):
    raise ValueError(f"configs/sweep_adaptation.py: unknown variant {arg!r}; expected '' or "
                     "'quick'")
  base = qa_tune_config.get_config(arg)
  # All 13 demo documents (52 sections, 47 held-out questions) at 2 updates per section and one
  # traced question: the budget that fits three runs of the 135M model in ~1 h on 2 CPU cores.
  base.steps_per_section = 2
  base.trace_questions = 1
  if arg:
    base.max_documents = 1
    base.qa_sources = "rule,curated"  # no model-generated Q&A: seconds instead of minutes
    base.save_model = False
    base.eval.benchmarks = "arc_easy"
    base.eval.max_items = 4
  runs = [("sectionwise", {"mode": "sectionwise"}), ("onepass", {"mode": "onepass"}),
          ("none", {"mode": "none"})]
  if arg:
    runs = [runs[0], runs[2]]
  return make_sweep_config(
      base, "qa_tune", runs, title="adaptation: section-wise vs one-pass vs none",
      description="Same model, corpus, Q&A, optimizer and token budget; only the training "
                  "mode changes.",
      bar_metrics=("heldout_ll_accuracy_after", "heldout_f1_after"))
