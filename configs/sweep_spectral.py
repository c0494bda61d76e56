"""Ablation: spectral (DCT / FFT) truncation of the rank-block factors, kept energy 1.0 -> 0.8.

Command (from the repo root):
  python -m experiments.sweep --config=configs/sweep_spectral.py --workdir=workdirs/sweep_spectral
  python -m experiments.sweep --config=configs/sweep_spectral.py:quick \
      --workdir=/tmp/sweep_spectral_q

Runs the `compress` job on SmolLM2-135M: Penrose tiles, whitened, param_ratio 0.6 budget, then
spectral='dct' on the factors (spectral_scope 'factor') keeping 1.0 / 0.99 / 0.95 / 0.9 / 0.8
of the coefficient energy, and spectral='fft' at 0.95. Indices are counted, so the stored ratio
starts above 0.6 (0.845 at keep 1.0, measured) and falls as coefficients are dropped; the
plots (achieved param_ratio vs perplexity and vs hidden KL) show where the knee is.
Produces DIR/results.csv, DIR/report.md, DIR/plots/, DIR/runs/<name>/.
Time on the 2-core CPU machine (2026-11-23/24): 562-1,061 s per run, ~1.2 h for all 6 (the
first 3 built leaves in 275-604 s; after SpectralArray.dense_host the last 3 took 23-33 s, so
a rerun now takes ~10 min per run, mostly evaluation).
quick (tiny model, MLP kernels only, 2 runs: dct keep 1.0 and 0.9): measured 24-40 s.
"""

import ml_collections

from configs import compress as compress_config
from configs.sweep_tiling import quick_compress_base
from penrose_jax.jobs.sweep import make_sweep_config

KEEP = (1.0, 0.99, 0.95, 0.9, 0.8)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the spectral sweep; `quick` runs two kept-energy points on the tiny model."""
  if arg not in ("", "quick"):
    raise ValueError(f"configs/sweep_spectral.py: unknown variant {arg!r}; expected '' or "
                     "'quick'")
  base = quick_compress_base() if arg else compress_config.get_config()
  base.compression.param_ratio = 0.6
  base.compression.spectral_scope = "factor"
  runs = [(f"dct_{keep}", {"compression.spectral": "dct", "compression.keep_energy": keep})
          for keep in KEEP]
  runs.append(("fft_0.95", {"compression.spectral": "fft", "compression.keep_energy": 0.95}))
  if arg:
    runs = [runs[0], runs[3]]
    # Spectral leaves compile slowly on CPU (~40 s per run for all 14 tiny kernels under
    # load): the smoke variant compresses the MLP kernels only.
    base.compression.include = r".*mlp/(gate_proj|up_proj|down_proj)/kernel$"
    base.tiling_pictures = "layers_0/mlp/down_proj/kernel"
  return make_sweep_config(
      base, "compress", runs, title="spectral truncation of the factors (kept energy)",
      description="Penrose tiles, whitened, rank budget param_ratio 0.6; the DCT (or FFT) "
                  "coefficients of each factor are truncated to the kept energy fraction.",
      method_key=("compression.spectral",), plot_x="param_ratio",
      plot_y=("ppl_compressed", "hidden_kl"))
