"""Knowledge injection on the team's benchmark: section-wise vs one-pass vs one-pass + augmentation.

Command (from the repo root):
  python -m experiments.sweep --config=configs/sweep_injection.py \
      --workdir=workdirs/sweep_injection_full
  python -m experiments.sweep --config=configs/sweep_injection.py:two_docs \
      --workdir=workdirs/sweep_injection
  python -m experiments.sweep --config=configs/sweep_injection.py:quick \
      --workdir=/tmp/sweep_injection_q

Runs the `qa_tune` job with configs/qa_tune.py:injection (SmolLM2-135M-Instruct 'default') and
the earlier injection recipe STUDY_INJECTION_RECIPE: study material only, answer-only completions, seq_len 112,
LoRA r=8 at lr 3e-3, 1 epoch per section, replay 0.2, general text 0.1) on the packaged
injection benchmark (docs/knowledge_injection.md section 4: package:injection_corpus, 8 invented
documents, 32 sections; exam package:injection_exam, 56 four-way questions, and
package:injection_open_exam). Runs, most informative first:
  sectionwise                 the recipe's rows one section after the other (the paper's order)
  onepass                     the plain document text, the same number of updates (train_tokens)
  onepass_augmented           the sectionwise rows shuffled over all documents (no section
                              order; the best measured, now the recipe's own mode)
  sectionwise_packed_epochs2  Q&A pairs packed into multi-turn rows of 256 tokens, 2 epochs
                              per section (~1.3x the budget, 2x the exposures per fact)
  sectionwise_passes2         all sections in order twice, half an epoch each (spaced
                              repetition at the recipe's budget)
  'recipe' adds: completions with reasoning, lr 1e-3, all parameters.
Every run scores the multiple-choice exam at 3 points inside the run (curve_points 4: the
learning curve) and the open questions after. The base model's exam scores are computed once
(exam_cache_dir). Forgetting: ARC-Easy and PIQA (../shared/data/general_eval), 500 items each
before and after the sectionwise run only (binomial standard error ~2.2 points at p = 0.5, ~2.1
at p = 0.65); 500 + 500 items take ~5-6 min per evaluation here. No model checkpoint is saved
(save_model False); the train state is checkpointed after the last section only (~0.75 GB).

Outputs: DIR/results.csv (exam_accuracy_sum / exam_accuracy_mean / exam_em / exam_f1 /
exam_contains before and after, general_accuracy before / after, train_tokens, input_tokens,
loss_tokens, train_wall_s, wall_s, ...), DIR/report.md, DIR/plots/ (learning_curve_*.png: exam
accuracy vs training tokens inside each run; exam accuracy vs train_tokens, one point per run;
bars of the after metrics; training loss per run), DIR/runs/<name>/ (qa_tune workdirs:
exam_answers.json, curve.jsonl, traces.jsonl, metrics.jsonl); results_dir copies the tables and
plots to results/sweep_injection/ (two_docs: results/sweep_injection/two_docs/).

Variants: '' (8 documents, the 3 modes + packed + passes2), 'recipe' (sectionwise and the 5
recipe runs),
'two_docs' (the first 2 documents, 14 exam questions, 100 ARC / PIQA items), 'quick' (tiny
model, 2 documents, 2 runs, tests).

Measured on the 2-core CPU machine (2026-12-02, '' variant, one run at a time): sectionwise
1,923 s wall = 1,163 s of training (365 updates of 4 x 112 tokens, 163,520 train tokens,
3.2 s per update) + the exam at 5 points + ARC / PIQA 500 + 500 before (318 s) and after;
onepass 1,215 s (training 1,123 s). Results and reading: results/sweep_injection/. The earlier
recipe's two_docs numbers (rule + study Q&A with reasoning, lr 1e-3):
results/sweep_injection/two_docs_earlier_recipe/. quick: ~25 s inside the test run.
"""

import ml_collections

from configs import qa_tune as qa_tune_config
from penrose_jax.jobs.sweep import make_sweep_config

# Forgetting (ARC-Easy / PIQA) is scored on the section-wise run only: 500 + 500 items take
# ~6-11 min per evaluation on the 2-core machine.
NO_GENERAL = {"eval.benchmarks": ""}
MODE_RUNS = [("sectionwise", {"mode": "sectionwise"}),
             ("onepass", {"mode": "onepass", **NO_GENERAL}),
             ("onepass_augmented", {"mode": "onepass_augmented", **NO_GENERAL})]
# One setting of the section-wise recipe changed per run, most informative first.
SECTIONWISE = {"mode": "sectionwise"}  # the recipe's own mode shuffles (onepass_augmented)
RECIPE_RUNS = [("sectionwise_packed_epochs2", {**SECTIONWISE, "pack_qa": True, "seq_len": 256,
                                              "batch_size": 2, "epochs_per_section": 2.0,
                                              **NO_GENERAL}),
               ("sectionwise_passes2", {**SECTIONWISE, "curriculum_passes": 2,
                                        "epochs_per_section": 0.5, **NO_GENERAL}),
               ("sectionwise_reasoning", {**SECTIONWISE, "completion": "answer_reasoning",
                                          "seq_len": 192, **NO_GENERAL}),
               ("sectionwise_lr1e-3", {**SECTIONWISE, "learning_rate": 1e-3, **NO_GENERAL}),
               ("sectionwise_all", {**SECTIONWISE, "trainable": "all", "learning_rate": 5e-5,
                                    **NO_GENERAL})]


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the injection sweep; variants '', 'recipe', 'two_docs', 'quick'."""
  if arg not in ("", "recipe", "two_docs", "quick"):
    raise ValueError(f"configs/sweep_injection.py: unknown variant {arg!r}; expected '', "
                     "'recipe', 'two_docs' or 'quick'")
  base = qa_tune_config.get_config("injection")
  # The recipe these runs measured (the 'injection' variant now uses the recall material).
  base.update(qa_tune_config.STUDY_INJECTION_RECIPE)
  if arg == "quick":  # the tiny model and its small settings, on the same benchmark
    quick = qa_tune_config.get_config("quick")
    for key in ("model", "model_qa", "trace_max_new_tokens", "eval"):
      base[key] = quick[key]
  base.checkpoint_every_sections = 1000  # only after the last section
  base.save_model = False
  base.eval.benchmarks = "arc_easy,piqa"
  base.eval.max_items = 500
  runs = MODE_RUNS + RECIPE_RUNS[:2]
  results_dir = "results/sweep_injection"
  if arg == "recipe":
    runs = MODE_RUNS[:1] + RECIPE_RUNS
    results_dir = "results/sweep_injection/recipe"
  elif arg == "two_docs":
    base.max_documents = 2
    base.eval.max_items = 100
    runs = MODE_RUNS + RECIPE_RUNS[:2]
    results_dir = "results/sweep_injection/two_docs"
  elif arg == "quick":
    base.exam_cache_dir = ""
    base.max_documents = 2
    base.epochs_per_section = 0.5
    base.study_max_facts = 2
    base.seq_len = 64
    base.curve_points = 2
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
      columns=("model", "mode", "trainable", "completion", "curriculum_passes",
               "epochs_per_section", "replay_fraction", "learning_rate", "seq_len",
               "max_documents"))
  config.results_dir = results_dir
  return config
