"""The whole method end to end on the embedded default model and corpus (the README's main job).

Command (from the repo root; `make demo` creates .venv and runs the demo variant):
  python -m experiments.pipeline --config=configs/pipeline.py:demo --workdir=workdirs/demo
  python -m experiments.pipeline --config=configs/pipeline.py:quick --workdir=/tmp/pipeline_quick

Stages: dense evaluation -> [optional domain warm-up, `warmup.enabled`: 1 epoch of the compress
calibration sources on every dense weight, jobs/warmup.py; off in demo, on in quick] -> compress
(configs/compress.py: one whitened SVD per matrix, param_ratio 0.8 shared by the
measured-sensitivity knapsack) -> KL alignment (logit KL, lr 3e-5) -> Q&A fine-tuning of the
stored factors with the recall recipe (configs/qa_tune.py INJECTION_RECIPE: fact restatements,
short-answer Q&A, section text, shuffled, 10 % general replay from the packaged fallback
prose; self-test on held-out wordings) on 3 demo-corpus documents -> final evaluation.
Produces DIR/report.md (tables + plots; the chat prompt answered by every stage's model; a few
self-test questions with the final model's answers), DIR/report.json, DIR/plots/*.png and one
subfolder per stage (each with its own report.json; DIR/<stage>/chat.json). A rerun continues
after the last finished stage.
Every stage's perplexity is measured on the packaged demo corpus and general-English text
(package:general_text), plus SOFC dev and LAMBADA where ../shared exists (`text_sets` below).
Chat with the final model (report.md prints this command):
  python -m experiments.generate --config=configs/generate.py \
      --config.model=workdirs/demo/qa_tune/model --prompt="What is the capital of France?"
Leave text sets out with comma lists of their names: --config.eval.skip_text_sets=sofc_dev (dense
and final evaluation), --config.compress.eval.skip_text_sets / --config.align.eval.skip_text_sets.
The demo variant uses smaller calibration / evaluation sets, 20k tokens of alignment and a
14.6k-token recall stage (38 updates of 4 x 96). Measured 2026-12-02 on the 2-core machine beside
other jobs, with the earlier section-wise rule-Q&A stage: 1,878 s after the dense stage (compress
930 s of which the sensitivity pass 684 s, align 606 s), plus ~3-5 min for the dense stage;
final model SOFC dev 1.19x / LAMBADA 1.17x dense, answers "Paris" (results/demo). The recall
stage alone: results/demo/qa_stage_real/reading.md; the whole demo with it is not re-measured.
SOFC-Exp extraction per stage (report.md table + bar plot, extraction/<stage>/ folders):
  --config.extraction.enabled=True (on in quick; off in demo, ~12 min more on SmolLM2-135M).
Time of quick (tiny model): ~1-2 min.
"""

import ml_collections

from configs import align as align_config
from configs import common
from configs import compress as compress_config
from configs import evaluate as evaluate_config
from configs import qa_tune as qa_tune_config
from configs.common import GENERAL_TEXT


def text_sets() -> ml_collections.ConfigDict:
  """The perplexity text sets of every pipeline stage.

  SOFC dev and LAMBADA where ../shared exists (skipped and listed otherwise); the packaged demo
  corpus and the packaged general-English text always, so a clone without ../shared still
  measures every stage.

  Returns:
    name -> source spec.
  """
  return common.text_sets("sofc_dev", "lambada", "demo_corpus", "general_text")


def warmup_config(compress: ml_collections.ConfigDict, quick: str
                  ) -> ml_collections.ConfigDict:
  """The warm-up stage's settings (jobs/warmup.py); its text sources are compress's calibration
  sources and its perplexity windows compress's evaluation windows (the same numbers)."""
  config = ml_collections.ConfigDict()
  config.enabled = bool(quick)
  config.sources = list(compress.calibration.sources)
  # Documents per source (0 = all). 8: on SOFC train ~60k tokens, i.e. ~10-15 min per epoch at
  # the 70-100 train tokens/s of SmolLM2 on the 2-core CPU machine (estimated, not run).
  config.max_documents = 2 if quick else 8
  config.epochs = 1.0
  config.batch_size = 4
  config.seq_len = 64 if quick else 128
  # Every weight of the dense model: the rate of trainer.RECIPE_LEARNING_RATES['all'].
  config.learning_rate = 1e-4
  config.warmup_steps = 2
  config.seed = 0
  config.log_every = 1
  config.checkpoint_every_steps = 20
  config.eval = evaluate_config.get_config(quick)
  config.eval.text_sets = text_sets()
  config.eval.benchmarks = ""
  config.eval.extraction.enabled = False
  config.eval.window = compress.eval.window
  config.eval.max_windows = compress.eval.max_windows
  return config


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
  """Returns the pipeline config for variant 'demo' (default model) or 'quick' (tiny model)."""
  if arg not in ("demo", "quick"):
    raise ValueError(f"configs/pipeline.py: unknown variant {arg!r}; expected 'demo' or 'quick'")
  quick = "quick" if arg == "quick" else ""
  config = ml_collections.ConfigDict()
  # Rerun on a workdir of another config or inputs: move that run aside and start afresh
  # (penrose_jax/jobs/workdir.py); False stops with the changed keys named.
  config.overwrite = False
  config.model = "tiny" if quick else "default"
  config.chat_prompt = "What is the capital of France?"
  config.chat_max_new_tokens = 8 if quick else 48
  # Dense and final evaluation: benchmarks (forgetting) and perplexity on every text set.
  config.eval = evaluate_config.get_config(quick)
  config.eval.text_sets = text_sets()
  # The dense / final evaluations leave SOFC-Exp extraction out: `extraction` below runs it
  # on all four models in extraction/<stage>/ instead (one sentence draw for every row).
  config.eval.extraction.enabled = False
  # SOFC-Exp extraction of the dense, compressed, aligned and Q&A-tuned models side by side
  # (report.md table + plots/extraction_by_stage.png; docs/sofc_extraction.md). Fields as
  # evaluate's `extraction`. Off in the demo: on SmolLM2-135M zero-shot costs ~9 s per
  # sentence of all three tasks on the shared 2-core machine (measured: detection 0.7,
  # entities 5.8, slots 2.7 s; answers decode up to 64 tokens), so these 16 sentences per task
  # take ~3 min per model with its load and compiles, ~12 min for the four (estimated from
  # those per-sentence times, not run). quick: the tiny model on 2 dev articles (seconds).
  config.extraction = ml_collections.ConfigDict(config.eval.extraction.to_dict())
  config.extraction.enabled = bool(quick)
  if not quick:
    config.extraction.update(max_sentences=16, k_shot="0")
  # Each stage's own config; the pipeline wires model paths between stages at run time.
  config.compress = compress_config.get_config(quick)
  # The paper's optional pre-compression warm-up (its pipeline step 1): `epochs` passes of
  # domain text (the compress calibration sources, those that exist) on the dense model,
  # every weight trained (qa/trainer.py 'onepass', training/loop.py), in DIR/warmup/; compress
  # and align then start from / align to the warmed model (jobs/warmup.py). Off in the demo
  # (not measured on SmolLM2); on in quick.
  config.warmup = warmup_config(config.compress, quick)
  config.align = align_config.get_config(quick)
  del config.align.compress  # the pipeline's compress stage produces the student
  # Every stage measures the same text sets, so report.md has one row per stage and one column
  # per set (align reuses the compress stage's dense / compressed values on the same windows).
  config.compress.eval.text_sets = text_sets()
  config.align.eval.text_sets = text_sets()
  # The general text's held-out perplexity in align's validation curve (eval/ppl_general_text
  # in align/train/metrics.jsonl), beside the configured validation sets.
  if GENERAL_TEXT not in config.align.val_sources:
    config.align.val_sources = list(config.align.val_sources) + [GENERAL_TEXT]
  config.qa_tune = qa_tune_config.get_config(quick)
  # The recall recipe (configs/qa_tune.py INJECTION_RECIPE, issue 28): every short-answer fact
  # of a document restated >= 10 times under its entity, short-answer Q&A, the section text,
  # rows shuffled over all documents, 10 % general text; a self-test on held-out wordings.
  # The demo before it trained 24 rows of section-wise rule Q&A with "answer + Reasoning"
  # completions in 12 updates of 2 rows: round(2 x 0.125) = 0 general and round(2 x 0.25) = 0
  # replay rows per section, so nothing but the rule Q&A reached the weights (held-out accuracy
  # 0.1 -> 0, and without ../shared the final chat answer was "The answer is 2.2222.").
  config.qa_tune.update(qa_tune_config.INJECTION_RECIPE)
  # Replay the package's own general prose (qa/general_text.py) in every clone: not LAMBADA
  # (an evaluation set here, and missing without ../shared) and not package:general_text (the
  # held-out general set every stage is measured on).
  config.qa_tune.general_text = ""
  # The self-test (6 held-out wordings per document) only after training; no curve, no
  # plateau stop: the demo's budget is fixed.
  config.qa_tune.curve_points = 0
  config.qa_tune.patience = 0
  # The model reaching this stage is compressed: fine-tune its stored blocks (LoRA needs dense)
  # at the recipe's rate for them (learning_rate 0 = trainer.RECIPE_LEARNING_RATES: 1e-4).
  config.qa_tune.trainable = "compressed"
  config.qa_tune.learning_rate = 0.0
  if quick:
    config.qa_tune.epochs_per_section = 0.5
    config.qa_tune.seq_len = 64
  if not quick:
    config.eval.max_windows = 8
    config.eval.max_items = 30
    # 8 tiles per matrix instead of 16: half the stored arrays, so the compressed model's
    # align and Q&A train steps compile in far less time and memory (the demo's bottleneck).
    # The compression is configs/compress.py's strong baseline (whitened single SVD, uniform
    # per-matrix budget at 0.8, results/sweep_baseline) on a smaller calibration set.
    config.compress.calibration.num_windows = 32
    config.compress.eval.max_windows = 12
    config.warmup.eval.max_windows = 12  # as compress's: the same windows
    config.compress.eval.hidden_kl_windows = 4
    # 40 updates of 4 x 128 tokens (20k tokens) of logit-KL alignment on mixed text.
    config.align.num_steps = 40
    config.align.optimizer.warmup_steps = 10
    config.align.num_train_windows = 160
    config.align.num_val_windows = 4
    config.align.log_every = 1
    config.align.eval_every = 10
    config.align.checkpoint_every = 20
    config.align.eval.max_windows = 12  # as compress's: its perplexities are reused
    # 3 documents (23 facts), half a pass over their recall rows: 38 updates of 4 x 96 tokens
    # (~5 min of training on the 2-core CPU machine).
    config.qa_tune.max_documents = 3
    config.qa_tune.epochs_per_section = 0.5
    config.qa_tune.eval.answer_max_new_tokens = 16
    config.qa_tune.eval.benchmarks = ""  # forgetting: dense vs final evaluation above
  return config
