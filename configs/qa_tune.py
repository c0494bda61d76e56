"""Section-wise Q&A fine-tuning (and its one-pass / no-training baselines) with evaluation.

Command (from the repo root):
  python -m experiments.qa_tune --config=configs/qa_tune.py --workdir=workdirs/qa_tune
  python -m experiments.qa_tune --config=configs/qa_tune.py:quick --workdir=/tmp/qa_quick
  python -m experiments.qa_tune --config=configs/qa_tune.py --config.mode=onepass \
      --workdir=workdirs/qa_tune_onepass

Variants: 'injection' (the injection recipe INJECTION_RECIPE on the packaged injection benchmark,
exam scored before / during / after, ARC-Easy and PIQA 500 items each; your own documents and
exam: --config.corpus=DIR --config.exam_path=FILE --config.open_exam_path=FILE; the 8 documents'
recall material is ~156k train tokens per epoch: 2 epochs, i.e. 49.7 min of training with its
curve evaluations (112.8 train tokens/s) on the 2-core CPU machine unless the self-test
plateaus or max_train_s (2,900 s) stops it; results/injection_recall_names: self-test 144 of
180, open exam EM 42.9 %, MC 89.3 %; results/injection_recall_2ep: the same before the name /
unit-value facts, 37.8 min),
'' (SmolLM2-135M-Instruct 'default', LoRA r=8 on all projections, the demo corpus),
'quick' (the tiny random model, 2 documents, 2 updates per section; ~15-25 s on the 2-core CPU
machine), 'sofc_qa' (Q&A generation only: model + rule sources on SOFC articles, no training),
'sofc_tasks' (LoRA on the SOFC-Exp extraction tasks of the 26 train articles; score the saved
DIR/model with `evaluate --config.model=DIR/model` on the dev split).

Outputs in DIR: report.json (heldout_ll_accuracy/em/f1 before/after, general_accuracy
before/after per benchmark, train_tokens, tokens_per_s, wall_s, mode, qa_pairs_by_source,
filter_rejection_rate, ...), qa_pairs.jsonl (+ .progress, .rejected.jsonl), traces.jsonl
(per section: questions, greedy answers before/after, losses), metrics.jsonl, checkpoints/,
eval_before.json, heldout_answers.json, model/ (a model checkpoint folder: model_registry.load
accepts it); with an exam (exam_path / open_exam_path): exam_accuracy_sum / exam_accuracy_mean /
exam_em / exam_f1 / exam_by_doc before/after in report.json, exam_before.json, exam_answers.json.
The team's injection benchmark: --config.corpus=package:injection_corpus --config.heldout_path=
--config.curated_path= --config.exam_path=package:injection_exam
--config.open_exam_path=package:injection_open_exam (docs/knowledge_injection.md).
A rerun with the same DIR resumes (Q&A per document, training per section).
Measured times on the 2-core CPU machine: see README ("Section-wise Q&A fine-tuning").
"""

import ml_collections

from penrose_jax.parallel import default_parallel_config

# The train split of SOFC-Exp (../shared/data/sofc_exp/metadata.tsv).
SOFC_TRAIN_ARTICLES = (
    "PMC3564701,PMC3730159,PMC3793895,PMC4021905,PMC4222441,PMC4313086,PMC4578433,PMC4663492,"
    "PMC4673446,PMC4770875,PMC4772004,PMC4895149,PMC4986314,PMC4992832,PMC5075869,PMC5216129,"
    "PMC5331335,PMC5456601,PMC5456869,PMC5457052,PMC5700654,PMC5706185,PMC5793538,PMC5848893,"
    "PMC6073263,PMC6158676")


# The injection recipe (variant 'injection', the base of configs/sweep_injection.py), issue 28:
# the 'recall' study material (qa/fact_recall.py: every short-answer fact restated >= 10 times
# under the document's entity, both directions, value first and last, never two paraphrases of
# one fact in a row; short-answer Q&A; the section text), rows shuffled over all documents
# (mode 'onepass_augmented'; --config.mode=sectionwise restores the paper's order), answer-only
# completions, seq_len 96 (Q&A rows: median 66 tokens; restatements packed at 92 % fill), LoRA
# r=8 on all projections at the rate that fits the trainable choice (learning_rate 0 =
# run_control.RECIPE_LEARNING_RATES: 3e-3 LoRA, 1e-4 stored factors (--config.trainable=compressed)
# or all weights), 2 passes, a curve point per half pass (exam multiple choice and open answers +
# self-test recall on 4 held-out wordings per document) and a stop at a self-test plateau
# (patience 2). Measured in results/injection_recall_names (2 epochs, 49.7 min of training:
# open exam EM 42.9 %, multiple choice 89.3 %).
INJECTION_RECIPE = dict(mode="onepass_augmented", qa_sources="recall", completion="answer",
                        seq_len=96, batch_size=4, learning_rate=0.0, epochs_per_section=2.0,
                        curriculum_passes=1, replay_fraction=0.0, general_replay_fraction=0.1,
                        trace_losses=False, trace_questions=0, curve_points=4, patience=2,
                        plateau_key="selftest_recall")

# The earlier injection recipe (study material, seq_len 112, one epoch; measured in
# results/sweep_injection and results/injection_compressed): configs/sweep_injection.py keeps
# it so its runs reproduce those results.
STUDY_INJECTION_RECIPE = dict(mode="onepass_augmented", qa_sources="study", completion="answer",
                              seq_len=112, batch_size=4, learning_rate=3e-3,
                              epochs_per_section=1.0, curriculum_passes=1, replay_fraction=0.2,
                              general_replay_fraction=0.1, trace_losses=False, trace_questions=0,
                              curve_points=4, patience=0)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the qa_tune config; variants: '', 'quick', 'sofc_qa', 'sofc_tasks', 'injection'."""
  config = ml_collections.ConfigDict()
  # Rerun on a workdir of another config or inputs: move that run aside and start afresh
  # (penrose_jax/jobs/workdir.py); False stops with the changed keys named.
  config.overwrite = False
  config.model = "default"  # 'default' | 'tiny' | .gguf | HF dir | model checkpoint folder
  config.corpus = "package:demo_corpus"
  config.documents = ""  # comma list of doc_ids to train on, in this order ('' = all)
  config.max_documents = 0  # 0 = all
  config.max_section_words = 0  # 0 = sections as read
  config.qa_sources = "rule,curated"  # any of rule, curated, model, sofc_tasks, study
  # 'study' source (qa/study_material.py): questions per fact in different wordings (odd ones
  # answered in a sentence), facts per section (0 = all); its restatements and entity notes
  # train as text rows of their section.
  config.study_variants = 4
  config.study_max_facts = 0
  config.curated_path = "package:curated_qa"
  config.heldout_path = "package:heldout_questions"
  # A user's closed-book exam, scored before and after training (docs/knowledge_injection.md):
  # comma lists of JSONL files of multiple-choice {question, choices, gold[, doc_id]} and open
  # {question, answer[, doc_id]} questions ('' = none; e.g. package:injection_exam and
  # package:injection_open_exam with corpus=package:injection_corpus). exam_cache_dir: a folder
  # where the base model's "before" scores are kept for other runs ('' = DIR only).
  config.exam_path = ""
  config.open_exam_path = ""
  config.exam_cache_dir = ""
  config.model_qa = ml_collections.ConfigDict(dict(
      num_questions=4, max_new_tokens=256, max_prompt_tokens=1536, min_token_fraction=0.6,
      batch_size=8))  # sections of a document decoded together (generation.generate_batch)
  # The 'sofc_tasks' source (qa/sofc_source.py): SOFC-Exp extraction prompts + gold answers of
  # train-split articles only; max_per_document caps sentences per task and article (0 = all).
  config.sofc_tasks = ml_collections.ConfigDict(dict(
      data_root="../shared/data/sofc_exp", tasks="detection,entities,slots", max_per_document=0,
      seed=0))
  # Training (fields of qa.curriculum_config.CurriculumConfig).
  # 'onepass_augmented': the section-wise rows (same material, same tokens) shuffled over all
  # documents, no section order.
  config.mode = "sectionwise"  # 'sectionwise' | 'onepass' | 'onepass_augmented' | 'none'
  config.steps_per_section = 4
  # > 0: each section gets the updates for this many passes over its examples (replaces
  # steps_per_section; every mode spends the same total).
  config.epochs_per_section = 0.0
  config.section_order = "mixed"  # 'mixed' | 'text_then_qa' | 'qa_then_text' (within a section)
  # What a Q&A row trains: 'answer_reasoning' (answer, then 'Reasoning: ...') | 'answer'.
  config.completion = "answer_reasoning"
  # Sections 1..N in order this many times (spaced repetition; each pass gets
  # epochs_per_section / steps_per_section of updates per section).
  config.curriculum_passes = 1
  # Pack a section's Q&A pairs into multi-turn chat rows of seq_len tokens (fewer rows).
  config.pack_qa = False
  config.trace_losses = True  # per-section Q&A / text loss before / after in traces.jsonl
  # > 1: the multiple-choice exam is also scored at curve_points - 1 points inside the run
  # (report exam_curve, sweep plot learning_curve_*.png).
  config.curve_points = 0
  # > 0: a shuffled run stops once the curve's plateau_key (e.g. 'selftest_recall') has not
  # risen by more than plateau_min_delta for this many curve points (the budget is the maximum).
  config.patience = 0
  config.plateau_key = "selftest_recall"
  config.plateau_min_delta = 0.0
  # > 0: a shuffled run also stops at the first curve point after this many seconds of training.
  config.max_train_s = 0.0
  # The self-test of the 'recall' source (jobs/self_test.py): held-out wordings per document
  # scored at the curve points, greedy answer budget, and whether the open exam is scored at
  # the curve points too (greedy answers: ~1 s per question on the 2-core CPU machine).
  config.selftest = ml_collections.ConfigDict(dict(curve_per_doc=6, max_new_tokens=16,
                                                   curve_open_exam=False))
  config.batch_size = 4
  config.seq_len = 128
  config.replay_fraction = 0.25
  config.general_replay_fraction = 0.125
  config.general_text = "../shared/data/general_eval/lambada_openai.jsonl"  # '' = packaged text
  config.general_text_max = 200
  config.trainable = "lora"  # 'lora' | 'compressed' | 'all'
  # Compressed kernels: 'materialize' forms W inside the step (compiles in a fraction of the
  # time of 'factored' on CPU for a globally budgeted model); 'factored' never forms W.
  config.compressed_matmul = "materialize"
  config.lora_rank = 8
  config.lora_alpha = 16.0
  config.learning_rate = 1e-3  # <= 0: rate fits `trainable` (run_control.RECIPE_LEARNING_RATES)
  config.warmup_steps = 2
  config.weight_decay = 0.0
  config.clip_norm = 1.0
  config.seed = 0
  config.trace_questions = 2
  config.trace_max_new_tokens = 24
  config.max_section_windows = 0
  config.log_every = 1
  config.checkpoint_every_sections = 1  # full train-state checkpoints (params + Adam moments)
  config.save_model = True
  config.save_merged = True  # merge LoRA into dense kernels before saving / evaluating
  config.eval = ml_collections.ConfigDict(dict(
      enabled=True, benchmark_dir="../shared/data/general_eval", benchmarks="arc_easy,piqa,copa",
      max_items=100, batch_size=16, answer_max_new_tokens=24))
  # Mesh / sharding rules / multi-host start-up (penrose_jax.parallel; see README "Running on
  # a TPU pod / multi-GPU"). The default is data-parallel over every device.
  config.parallel = default_parallel_config()
  if arg == "quick":
    config.model = "tiny"
    config.max_documents = 2
    config.qa_sources = "rule,curated,model,study"
    config.model_qa.max_new_tokens = 16
    config.steps_per_section = 2
    config.seq_len = 64
    config.trace_questions = 1
    config.trace_max_new_tokens = 8
    config.eval.max_items = 8
    config.eval.batch_size = 8
    config.eval.answer_max_new_tokens = 8
  elif arg == "sofc_qa":
    config.corpus = "../shared/data/sofc_exp/texts"
    config.max_documents = 3
    config.qa_sources = "model,rule"
    config.curated_path = ""
    config.heldout_path = ""
    config.mode = "none"
    config.save_model = False
    config.eval.enabled = False
  elif arg == "sofc_tasks":
    # Supervised adaptation to the extraction format on the 26 train articles (dev untouched);
    # --config.mode=onepass reads the same articles as the baseline. Prompts are ~300 tokens.
    config.corpus = "../shared/data/sofc_exp/texts"
    config.documents = SOFC_TRAIN_ARTICLES
    config.qa_sources = "sofc_tasks"
    config.curated_path = ""
    config.heldout_path = ""
    config.seq_len = 384
    config.sofc_tasks.max_per_document = 40  # detection would otherwise be 85 % of the pairs
  elif arg == "injection":
    # The packaged injection benchmark with the injection recipe (INJECTION_RECIPE).
    config.corpus = "package:injection_corpus"
    config.curated_path = ""  # the curated file and held-out questions are about the demo corpus
    config.heldout_path = ""
    config.exam_path = "package:injection_exam"
    config.open_exam_path = "package:injection_open_exam"
    config.exam_cache_dir = "workdirs/exam_cache"
    config.eval.benchmarks = "arc_easy,piqa"
    config.eval.max_items = 500
    for key, value in INJECTION_RECIPE.items():
      config[key] = value
    # The measured run (results/injection_recall_names): 2 epochs, a curve point per half
    # epoch with the open exam scored there too, a stop at the first curve point after 2,900 s.
    config.max_train_s = 2900.0
    config.selftest.curve_per_doc = 4
    config.selftest.curve_open_exam = True
  elif arg:
    raise ValueError(f"configs/qa_tune.py: unknown variant {arg!r}; expected '', 'quick', "
                     "'sofc_qa', 'sofc_tasks' or 'injection'")
  return config
