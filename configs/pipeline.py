"""The whole method end to end on the embedded default model and corpus (the README's main job).

Command (from the repo root; `make demo` creates .venv and runs the demo variant):
  python -m experiments.pipeline --config=configs/pipeline.py:demo --workdir=workdirs/demo
  python -m experiments.pipeline --config=configs/pipeline.py:quick --workdir=/tmp/pipeline_quick

Produces DIR/report.md (tables + plots), DIR/report.json, DIR/plots/*.png.
Time on the 2-core CPU machine: demo see README; quick (tiny model): ~30 s.
"""

import ml_collections

from configs import evaluate as evaluate_config


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
  """Returns the pipeline config for variant 'demo' (default model) or 'quick' (tiny model)."""
  if arg not in ("demo", "quick"):
    raise ValueError(f"configs/pipeline.py: unknown variant {arg!r}; expected 'demo' or 'quick'")
  config = ml_collections.ConfigDict()
  config.model = "default"
  config.chat_prompt = "What is the capital of France?"
  config.chat_max_new_tokens = 48
  config.eval = evaluate_config.get_config()
  config.eval.max_windows = 48
  config.eval.max_items = 100
  if arg == "quick":
    config.model = "tiny"
    config.chat_max_new_tokens = 8
    config.eval = evaluate_config.get_config("quick")
  return config
