"""Compress a model layer by layer into Penrose-tiled (or grid / single) low-rank blocks.

Command (from the repo root, inside .venv):
  python -m experiments.compress --config=configs/compress.py --workdir=workdirs/compress_penrose
  python -m experiments.compress --config=configs/compress.py \
      --config.compression.tiling=grid --workdir=workdirs/compress_grid
  python -m experiments.compress --config=configs/compress.py:quick --workdir=/tmp/compress_quick

Produces DIR/model (compressed checkpoint folder), DIR/report.json (params_dense,
params_compressed, param_ratio, bytes_compressed, ppl_dense, ppl_compressed, hidden_kl,
hidden_kl_per_layer, per-matrix rows, wall_s, peak_rss_mib, stage_s: seconds per stage,
peak_rss_mib_after_layer) and DIR/tiling_*.png.
Rerunning with the same workdir resumes after the last finished layer.
Leave evaluation text sets out of one run: --config.eval.skip_text_sets=lambada (comma list of
eval.text_sets names). List fields take a comma list or a literal on the command line:
--config.calibration.sources=../shared/data/sofc_exp/texts@train,package:demo_corpus.
Time on the 2-core CPU machine: SmolLM2-135M at param_ratio 0.6 with whitening took 13.5-15.5
min including evaluation when the evaluation compiled the compressed forward (810-925 s under
load 4-10; README table); without evaluation 307 s (randomized SVD, partly under load;
benchmarks/compression_speed.py). quick (tiny model): ~20 s.
"""

import ml_collections

from penrose_jax.compression.transform import DEFAULT_INCLUDE
from penrose_jax.parallel import default_parallel_config

SOFC = "../shared/data/sofc_exp/texts"
LAMBADA = "../shared/data/general_eval/lambada_openai.jsonl"


def compression_section() -> ml_collections.ConfigDict:
  """Compression settings (fields of compression.transform.CompressionConfig)."""
  c = ml_collections.ConfigDict()
  c.include = DEFAULT_INCLUDE
  c.exclude = ""
  c.method = "tiled"            # 'tiled' (rank blocks) or 'rtn' (plain int8/int4 baseline)
  c.tiling = "single"           # 'penrose' | 'grid' | 'single' (single: best measured)
  c.tiles_per_matrix = 16
  c.phase = 0.0
  c.rank_policy = "budget"      # 'budget' | 'fixed' | 'energy'
  # 'matrix' (SVD-LLM's uniform split), 'normalized' (one model-wide budget, greedy on relative
  # output error) or 'global' (greedy on raw whitened energies: starves early attention).
  c.budget_scope = "matrix"
  c.param_ratio = 0.8
  # Rank floor per tile: without it the global greedy zeroed whole matrices (layers_0 v_proj
  # of SmolLM2 at 0.6), which alignment cannot revive. The README's first compression table
  # was measured with min_rank=0 (its commands say so).
  c.min_rank = 1
  c.energy = 0.9
  c.whiten = True
  # Relative Cholesky ridge, raised x10 only where a Gram does not factor (1e-2 blurred the
  # whitening; see results/sweep_baseline).
  c.damping = 1e-4
  c.svd_method = "exact"        # 'exact' | 'randomized' (leading break-even rank; large matrices)
  c.spectral = "none"           # 'none' | 'dct' | 'fft'
  c.spectral_scope = "factor"   # 'factor' | 'block'
  c.tau = ml_collections.config_dict.placeholder(float)  # magnitude threshold, or
  c.keep_energy = 1.0           # kept coefficient energy fraction
  c.quantize = "none"           # 'none' | 'int8' | 'int4'
  c.group_size = 64
  return c


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the compress config; `quick` runs on the tiny model in seconds."""
  config = ml_collections.ConfigDict()
  config.model = "default"
  config.compression = compression_section()
  config.calibration = ml_collections.ConfigDict()
  # A mix of domain and general text: whitening on one domain alone over-fits it.
  config.calibration.sources = [f"{SOFC}@train", LAMBADA, "package:demo_corpus"]
  config.calibration.num_windows = 64
  config.calibration.window = 256
  config.calibration.seed = 0
  # Each layer is whitened on activations of the already-compressed layers before it (as
  # SVD-LLM / GPTQ do); False uses the dense model's activations.
  config.calibration.sequential = True
  config.eval = ml_collections.ConfigDict()
  config.eval.enabled = True
  config.eval.text_sets = ml_collections.ConfigDict(
      {"sofc_dev": f"{SOFC}@dev", "lambada": LAMBADA, "demo_corpus": "package:demo_corpus"})
  config.eval.skip_text_sets = ""  # comma list of eval.text_sets names this run leaves out
  config.eval.primary = "sofc_dev"
  config.eval.window = 256
  config.eval.max_windows = 48  # spread over every document of a set (seeded)
  config.eval.batch_size = 8
  config.eval.hidden_kl_windows = 8
  config.tiling_pictures = "layers_0/attn/q_proj/kernel,layers_0/mlp/down_proj/kernel"
  # Mesh / sharding rules / multi-host start-up (penrose_jax.parallel; see README "Running on
  # a TPU pod / multi-GPU"). The default is data-parallel over every device.
  config.parallel = default_parallel_config()
  if arg == "quick":
    config.model = "tiny"
    config.compression.tiles_per_matrix = 8
    config.calibration.num_windows = 8
    config.calibration.window = 64
    config.eval.window = 64
    config.eval.max_windows = 4
    config.eval.hidden_kl_windows = 2
  elif arg:
    raise ValueError(f"configs/compress.py: unknown variant {arg!r}; expected '' or 'quick'")
  return config
