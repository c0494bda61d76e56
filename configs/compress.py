"""Compress a model layer by layer into low-rank blocks (one whitened SVD per matrix by default).

Command (from the repo root, inside .venv):
  python -m experiments.compress --config=configs/compress.py --workdir=workdirs/compress
  python -m experiments.compress --config=configs/compress.py \
      --config.compression.tiling=penrose --workdir=workdirs/compress_penrose
  python -m experiments.compress --config=configs/compress.py:quick --workdir=/tmp/compress_quick
  python -m experiments.compress --config=configs/compress.py:quick_alloc --workdir=/tmp/c_alloc
  python -m experiments.compress --config=configs/compress.py \
      --config.compression.bytes_ratio=0.12 --workdir=workdirs/compress_alloc_0.12
    (bytes allocator: per-matrix GPTQ int3 / int3+r16 / int4 / int8 from measured logit KL
    under 12 % of the float32 bytes; compression.bytes_allocation; not measured yet)

Defaults = the best of results/sweep_baseline: whitened single SVD per matrix, param_ratio 0.8
shared by a measured-sensitivity knapsack (budget_scope 'sensitivity': each matrix truncated
alone to 0.4 / 0.6 / 0.8, logit KL to the dense model on 2 calibration windows, then an exact
knapsack; SOFC dev 1.29x / LAMBADA 1.38x dense at 0.8 against 2.18x / 3.03x for SVD-LLM's
uniform split, budget_scope 'matrix'), damping 1e-4, 64 calibration windows of 256 tokens from
SOFC train + LAMBADA + demo corpus, sequential calibration; evaluation on 48 windows per text
set spread over every document.
Produces DIR/model (compressed checkpoint folder), DIR/report.json (params_dense,
params_compressed, param_ratio, bytes_compressed, ppl_dense, ppl_compressed (+ _by_set),
eval_windows (the scored windows per document), hidden_kl, hidden_kl_per_layer,
hidden_rel_error_per_layer, logit_kl, per-matrix rows, wall_s, peak_rss_mib, stage_s: seconds
per stage, peak_rss_mib_after_layer) and DIR/tiling_*.png.
Rerunning with the same workdir resumes after the last finished layer.
Time on the 2-core CPU machine (2026-12-02, beside other jobs): SmolLM2-135M with the uniform
split 870 s (calibrate 283 s, factor 61 s, evaluation 466 s of which half is the dense model's
perplexities; sweeps cache those); the sensitivity pass adds 630 truncated forwards (~35 min
under heavy load, 2 windows; the table is cached per sweep, so other ratios skip it);
quick (tiny model): ~20-40 s.
"""

import ml_collections

from configs import common
from configs.common import DEMO_CORPUS, LAMBADA, SOFC_TRAIN
from penrose_jax.compression.transform import DEFAULT_INCLUDE
from penrose_jax.parallel import default_parallel_config


def compression_section() -> ml_collections.ConfigDict:
  """Compression settings (fields of compression.transform.CompressionConfig)."""
  c = ml_collections.ConfigDict()
  c.include = DEFAULT_INCLUDE
  c.exclude = ""
  # 'tiled' (rank blocks), 'rtn' (plain round-to-nearest baseline) or 'gptq' (GPTQ on the
  # calibration inputs of the already-quantized layers; same stored leaf and bytes as 'rtn').
  c.method = "tiled"
  c.tiling = "single"           # 'penrose' | 'grid' | 'single' (single: best measured)
  c.tiles_per_matrix = 16
  c.phase = 0.0
  c.rank_policy = "budget"      # 'budget' | 'fixed' | 'energy'
  # 'matrix' (SVD-LLM's uniform split), 'normalized' (one model-wide budget, greedy on relative
  # output error) or 'global' (greedy on raw whitened energies: starves early attention).
  # 'sensitivity' (best measured): one ratio per matrix from its logit KL when truncated alone
  # to each candidate (ASVD), then an exact knapsack under param_ratio; 'matrix' = SVD-LLM's
  # uniform split; 'normalized' / 'global' = model-wide greedy on relative / raw whitened energy.
  c.budget_scope = "sensitivity"
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
  c.quantize = "none"           # 'none' | 'int8' | 'int4' | 'int3'
  # Methods 'rtn' / 'gptq': per-matrix bits as ('regex=quant', ...), first match wins, e.g.
  # ('mlp/down_proj=int4', 'attn/v_proj=int4') with quantize 'int3' (a llama.cpp-style mix).
  c.quantize_overrides = ()
  # Methods 'rtn' / 'gptq': rank of a whitened low-rank correction of each kernel's rounding
  # error, int8 factors (~(in + out) bytes per rank); 0 = none.
  c.correction_rank = 0
  c.group_size = 64
  # GPTQ (method 'gptq'): relative ridge (0 = the paper's 1 %), act-order unless natural order
  # is asked, a per-group clipping search over shrink factors of max|w| (() = 1.0 ... 0.6).
  # Defaults are empty values so a sweep workdir finished before these fields existed resumes.
  c.gptq_damping = 0.0
  c.gptq_natural_order = False
  c.gptq_clip_grid = ()
  c.sensitivity_candidates = ()  # () = (0.4, 0.6, 0.8, 1.0)
  c.sensitivity_windows = 0      # calibration windows the KL is measured on; 0 = 2
  # The layout the KL is measured with ('' = tiling); 'single' gives tiled runs the per-matrix
  # ratios of one SVD per matrix (a sweep measures that table once).
  c.sensitivity_tiling = ""
  # Bytes allocator (compression.bytes_allocation), 0 = off: every selected matrix gets one of
  # bytes_candidates, chosen from its measured logit KL (each matrix replaced alone, as the
  # sensitivity pass above, sensitivity_windows windows) by an exact knapsack with stored bytes
  # <= bytes_ratio x the matrices' float32 bytes; method / quantize / param_ratio are unused.
  # Candidates 'METHOD:QUANT[+rRANK]': 'gptq:int4', 'gptq:int3+r16', 'rtn:int4',
  # 'lowrank0.8:int8' (compression.candidates); () = gptq int3, int3+r16, int4, int8.
  c.bytes_ratio = 0.0
  c.bytes_candidates = ()
  return c


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the compress config; `quick` runs on the tiny model in seconds, `quick_alloc` is
  `quick` with the bytes allocator at bytes_ratio 0.17 over RTN / GPTQ candidates."""
  config = ml_collections.ConfigDict()
  # Rerun on a workdir of another config or inputs: move that run aside and start afresh
  # (penrose_jax/jobs/workdir.py); False stops with the changed keys named.
  config.overwrite = False
  config.model = "default"
  config.compression = compression_section()
  config.calibration = ml_collections.ConfigDict()
  # A mix of domain and general text: whitening on one domain alone over-fits it.
  config.calibration.sources = [SOFC_TRAIN, LAMBADA, DEMO_CORPUS]
  config.calibration.num_windows = 64
  config.calibration.window = 256
  config.calibration.seed = 0
  # Each layer is whitened on activations of the already-compressed layers before it (as
  # SVD-LLM / GPTQ do); False uses the dense model's activations.
  config.calibration.sequential = True
  config.eval = ml_collections.ConfigDict()
  config.eval.enabled = True
  config.eval.text_sets = common.text_sets("sofc_dev", "lambada", "demo_corpus")
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
  if arg in ("quick", "quick_alloc"):
    config.model = "tiny"
    config.compression.tiles_per_matrix = 8
    config.calibration.num_windows = 8
    config.calibration.window = 64
    config.eval.window = 64
    config.eval.max_windows = 4
    config.eval.hidden_kl_windows = 2
    if arg == "quick_alloc":  # the bytes allocator on the tiny model (~30 s)
      config.compression.bytes_ratio = 0.17
      config.compression.bytes_candidates = ("rtn:int3", "gptq:int4", "gptq:int3+r4",
                                             "gptq:int8")
  elif arg:
    raise ValueError(f"configs/compress.py: unknown variant {arg!r}; expected '', 'quick' or "
                     "'quick_alloc'")
  return config
