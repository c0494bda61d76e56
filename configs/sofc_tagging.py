"""SOFC-Exp extraction as BIO tagging: fine-tune backbone + tagging head, select on dev.

Command (from the repo root, inside .venv):
  python -m experiments.sofc_tagging --config=configs/sofc_tagging.py --workdir=workdirs/tagging
  python -m experiments.sofc_tagging --config=configs/sofc_tagging.py:quick --workdir=/tmp/tq

Produces DIR/report.json (`row`: scores.entity_micro_f1 / entity_macro_f1 / slot_micro_f1 /
slot_macro_f1, per_type_f1, sentences, train_s, eval_s; `epochs`: dev scores per epoch; `dev`:
the best epoch's P/R/F1 per type), DIR/results.json ({'rows': [row]}, the sofc_extraction row
format), DIR/dev_scores/epoch_N.json and DIR/train/ (metrics.jsonl, orbax checkpoints of the
last and the best epoch; a rerun resumes). Train: every experiment sentence of the train split
(26 articles, 568 sentences); eval: every experiment sentence of dev (8 articles, 135).
`model`: 'default' (SmolLM2-135M-Instruct), 'tiny', a .gguf / HF directory, or a checkpoint
folder of compress / align / qa_tune (compressed leaves train their stored factors with
trainable='all' or 'compressed'). Scores follow the SOFC-Exp protocol (exact spans, conlleval;
experiment_evoking_word and interconnect_material are O in the slot task).
Measured on the shared 2-core CPU machine (results/sofc_tagging/reading.md), the default (2
epochs): training 1,245 s (55.5 tokens/s), one full dev pass 25 s, job wall 1,305 s; dev entity
micro-F1 0.658, slot micro-F1 0.494. quick: the tiny model on the data_root's first articles
(~25 s with compiles).
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the sofc_tagging config; `quick` is a smoke run on the tiny model."""
  config = ml_collections.ConfigDict()
  config.model = "default"
  config.data_root = "../shared/data/sofc_exp"
  config.train_split = "train"
  config.eval_split = "dev"
  config.max_articles = 0  # first N articles of each split (0 = all)
  config.max_sentences = 0  # first N experiment sentences of each split (0 = all)
  # Padded lengths (tokens, BOS included); each is one compiled shape; longer sentences are cut
  # to the last one. Rows per batch = batch_tokens // length.
  config.bucket_lengths = "48,96,192"
  config.batch_tokens = 768
  config.epochs = 2  # the measured run; scores still rose at epoch 2 (~11 min per extra epoch)
  config.trainable = "all"  # backbone arrays trained (training/trainable.py selectors)
  config.backbone_learning_rate = 5e-5
  config.head_learning_rate = 1e-3
  config.warmup_steps = 20
  config.weight_decay = 0.01
  config.clip_norm = 1.0
  # Bidirectional blocks between the decoder and the linear heads (right context for a causal
  # model; 0 = linear heads only).
  config.context_layers = 1
  # Train on the stacked-layers form (llama.stack_layers): runs of identical layers are one
  # lax.scan, so the train step compiles once per run instead of once per layer.
  config.stack_layers = True
  config.seed = 0
  config.row_name = ""  # results row name ('' = 'tagging dense' / 'tagging compressed')
  config.progress = True
  if arg == "quick":
    config.model = "tiny"
    config.bucket_lengths = "32"
    config.batch_tokens = 64
    config.epochs = 2
    config.warmup_steps = 0
    config.backbone_learning_rate = 1e-3
    config.head_learning_rate = 1e-2
    config.max_articles = 2
    config.max_sentences = 16
    config.progress = False
  elif arg:
    raise ValueError(f"configs/sofc_tagging.py: unknown variant {arg!r}; expected '' or 'quick'")
  return config
