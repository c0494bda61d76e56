"""Chat with (or complete text from) any checkpoint.

Command (from the repo root, inside .venv):
  python -m experiments.generate --config=configs/generate.py --prompt="What is the capital of France?"

Prints the answer; with --workdir also writes DIR/report.json (prompt, completion, tokens/s).
A file of prompts, one model load for all of them (answers in DIR/generations.jsonl, one JSON
line per prompt with the input line's fields plus `completion`):
  python -m experiments.generate --config=configs/generate.py \
      --config.prompts_path=my_questions.jsonl --workdir=/tmp/gen
Greedy by default; set --config.temperature=0.7 --config.top_p=0.9 to sample.
Time on the 2-core CPU machine: ~25 s for the default model (load + compile + 64 tokens).
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the generate config; `quick` uses the tiny random model."""
  config = ml_collections.ConfigDict()
  # Rerun on a workdir of another config or inputs: move that run aside and start afresh
  # (penrose_jax/jobs/workdir.py); False stops with the changed keys named.
  config.overwrite = False
  config.model = "default"
  config.prompt = "What is the capital of France?"
  # A file of prompts ('' = use `prompt`): .jsonl with {"prompt"} or {"question"} per line, or
  # text with one prompt per line; the model loads once, answers go to DIR/generations.jsonl.
  config.prompts_path = ""
  config.chat = True
  config.max_new_tokens = 64
  config.temperature = 0.0
  config.top_p = 1.0
  config.seed = 0
  # Prompts of a prompts file decoded together (generation.generate_batch; greedy answers equal
  # one-by-one decoding).
  config.batch_size = 16
  # Inference form with layers sharing one compiled block where their ranks align within 50 %
  # padding (compression.inference.prepare_for_inference): a 30-layer Penrose 0.6 model
  # compiled in 8 s instead of 339 s and decoded 1.31x dense instead of 0.81x
  # (results/README.md, "Inference speed: shared layer programs"). False compiles every layer.
  config.share_layers = True
  if arg == "quick":
    config.model = "tiny"
    config.max_new_tokens = 8
  elif arg:
    raise ValueError(f"configs/generate.py: unknown variant {arg!r}; expected '' or 'quick'")
  return config
