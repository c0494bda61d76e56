"""Knowledge injection on the team's benchmark: section-wise vs one-pass vs one-pass + augmentation.

Command (from the repo root):
  python -m experiments.sweep --config=configs/sweep_injection.py \
      --workdir=workdirs/sweep_injection_full
  python -m experiments.sweep --config=configs/sweep_injection.py:two_docs \
      --workdir=workdirs/sweep_injection
  python -m experiments.sweep --config=configs/sweep_injection.py:quick \
      --workdir=/tmp/sweep_injection_q

Runs the `qa_tune` job (configs/qa_tune.py: SmolLM2-135M-Instruct 'default') on the packaged
injection benchmark (docs/knowledge_injection.md section 4: package:injection_corpus, 8 invented
documents, 32 sections; exam package:injection_exam, 56 four-way questions, and
package:injection_open_exam), Q&A sources rule + study (study material: several wordings per
fact, restatements, entity notes), `epochs_per_section` passes over each section's rows. Runs,
most informative first:
  sectionwise        study material + rule Q&A + section text, one section after the other
  onepass            the plain document text, the same number of updates (same train_tokens)
  onepass_augmented  the same rows as sectionwise shuffled over all documents (no section order)
  then recipe variants of sectionwise: 4 epochs per section, all parameters trained
  (lr 5e-5), learning rate 3e-3 (RECIPE_RUNS also holds LoRA rank 32, left out for time).
The base model's exam scores are computed once (exam_cache_dir) and appear in every row as
exam_*_before. Forgetting: ARC-Easy and PIQA (../shared/data/general_eval), eval.max_items
items each before and after (500 in the full variant: binomial standard error
sqrt(p(1-p)/500) ~ 2.2 points at p = 0.5, ~2.0 at p = 0.7; a 1-point difference is below it).
No model checkpoint is saved (save_model False) and the train state is checkpointed only after
the last section (each checkpoint of SmolLM2 is ~0.75 GB).

Outputs: DIR/results.csv (exam_accuracy_sum / exam_accuracy_mean / exam_em / exam_f1 /
exam_contains before and after, general_accuracy before / after per benchmark, train_tokens,
input_tokens, train_wall_s, wall_s, ...), DIR/report.md, DIR/plots/ (exam accuracy vs
train_tokens per mode: the learning curve, one point per run; bars of the after metrics;
training loss per run; Q&A loss per section before / after its updates), DIR/runs/<name>/
(qa_tune workdirs: exam_answers.json, traces.jsonl, metrics.jsonl); the full variant copies the
tables and plots to results/sweep_injection/, two_docs to results/sweep_injection/two_docs/.

Variants: '' (8 documents, 6 runs, 500 ARC / PIQA items), 'two_docs' (the first 2 documents,
14 exam questions, the 3 mode runs at 1 epoch per section, 100 ARC / PIQA items: what fits the
2-core machine beside another job), 'quick' (tiny model, 2 documents, 2 runs, tests).

Measured on the 2-core CPU machine (2026-12-02, at nice 19 beside a compression sweep):
two_docs took 4,114 s for its 3 runs (sectionwise 1,687 s: 104 updates at 14.6 s including the
per-section loss traces, ~190 s per section; onepass 1,247 s; onepass_augmented 1,179 s;
each includes ~150 s of evaluation after training; the base model's evaluation, 136 s for
ARC / PIQA + 37 s for the exam, ran once and was reused), results and reading in
results/sweep_injection/two_docs/. The full variant was not run: at ~10-15 s per update its
993-update runs and 500-item benchmarks (~11 min per evaluation) need ~3-4 h per run, ~20 h in
all. quick: ~25 s inside the test run.
"""

import ml_collections

from configs import qa_tune as qa_tune_config
from penrose_jax.jobs.sweep import make_sweep_config

MODE_RUNS = [("sectionwise", {"mode": "sectionwise"}), ("onepass", {"mode": "onepass"}),
             ("onepass_augmented", {"mode": "onepass_augmented"})]
# Most informative first: exposures per fact, capacity (all parameters vs LoRA r=8), step size.
RECIPE_RUNS = [("sectionwise_epochs4", {"epochs_per_section": 4.0}),
               ("sectionwise_all", {"trainable": "all", "learning_rate": 5e-5}),
               ("sectionwise_lr3e-3", {"learning_rate": 3e-3}),
               ("sectionwise_rank32", {"lora_rank": 32, "lora_alpha": 64.0})]


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the injection sweep; variants '', 'two_docs', 'quick'."""
  if arg not in ("", "two_docs", "quick"):
    raise ValueError(f"configs/sweep_injection.py: unknown variant {arg!r}; expected '', "
                     "'two_docs' or 'quick'")
  base = qa_tune_config.get_config("quick" if arg == "quick" else "")
  base.corpus = "package:injection_corpus"
  base.curated_path = ""  # the curated file and held-out questions are about the demo corpus
  base.heldout_path = ""
  base.exam_path = "package:injection_exam"
  base.open_exam_path = "package:injection_open_exam"
  base.exam_cache_dir = "workdirs/exam_cache"
  base.qa_sources = "rule,study"
  base.epochs_per_section = 2.0
  # At 128 tokens 64 % of the Q&A rows lose the start of their prompt and a third lose part of
  # the question (prompt ~62 tokens with the chat template, answer + reasoning ~81, up to 150).
  base.seq_len = 192
  base.trace_questions = 0  # the per-section Q&A loss is still traced
  base.checkpoint_every_sections = 1000  # only after the last section
  base.save_model = False
  base.eval.benchmarks = "arc_easy,piqa"
  base.eval.max_items = 500
  runs = MODE_RUNS + RECIPE_RUNS[:3]
  results_dir = "results/sweep_injection"
  if arg == "two_docs":
    base.max_documents = 2
    base.epochs_per_section = 1.0
    base.eval.max_items = 100
    runs = list(MODE_RUNS)
    results_dir = "results/sweep_injection/two_docs"
  elif arg == "quick":
    base.exam_cache_dir = ""
    base.max_documents = 2
    base.epochs_per_section = 0.5
    base.study_max_facts = 2
    base.seq_len = 64
    base.eval.max_items = 4
    runs = [MODE_RUNS[0], MODE_RUNS[1]]
    results_dir = ""
  config = make_sweep_config(
      base, "qa_tune", runs,
      title="knowledge injection: section-wise vs one-pass vs one-pass + augmentation",
      description="Injection benchmark (invented documents, paraphrased exam, closed book). "
                  "Same model, corpus, optimizer and token budget (train_tokens) in every mode "
                  "run; the recipe runs change one setting of the section-wise run.",
      method_key=("mode",), plot_x="train_tokens",
      plot_y=("exam_accuracy_sum_after", "exam_accuracy_mean_after"),
      bar_metrics=("exam_accuracy_sum_after", "exam_accuracy_mean_after",
                   "general_accuracy_after.arc_easy", "general_accuracy_after.piqa"),
      columns=("model", "mode", "trainable", "epochs_per_section", "lora_rank", "learning_rate",
               "max_documents"))
  config.results_dir = results_dir
  return config
