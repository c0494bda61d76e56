"""Ablation: stored bytes vs perplexity: tiled low-rank (+int8 / int4) against plain RTN.

Command (from the repo root):
  python -m experiments.sweep --config=configs/sweep_bytes.py --workdir=workdirs/sweep_bytes
  python -m experiments.sweep --config=configs/sweep_bytes.py:quick --workdir=/tmp/sweep_bytes_q

Runs the `compress` job on SmolLM2-135M: tiling penrose / grid / single (whitened, param_ratio
0.6) with quantize none / int8 / int4 of the stored values (9 runs), and the plain round-to-
nearest baseline method='rtn' with int8 / int4 (group size 64; 2 runs). Produces
DIR/results.csv, DIR/report.md (the bytes / perplexity table), DIR/plots/
bytes_compressed_vs_ppl_compressed.png (one line per method, plus the dense point),
DIR/runs/<name>/. Time on the 2-core CPU machine (2026-11-24, another sweep beside it): 3,484 s
for 8 runs (the 3 float32 tiled runs were sweep_tiling's, reused): 447-584 s per tiled run,
151-177 s per RTN run, peak RSS 13.1 GiB; results in the README. quick (tiny model, 2 runs:
penrose int8, rtn int8): measured 21 s inside the test run, ~30 s as a command.
"""

import ml_collections

from configs import compress as compress_config
from configs.sweep_tiling import quick_compress_base
from penrose_jax.jobs.sweep import make_sweep_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the bytes sweep; `quick` runs Penrose int8 and RTN int8 on the tiny model."""
  if arg not in ("", "quick"):
    raise ValueError(f"configs/sweep_bytes.py: unknown variant {arg!r}; expected '' or 'quick'")
  base = quick_compress_base() if arg else compress_config.get_config()
  base.compression.param_ratio = 0.6
  base.compression.whiten = True
  runs = [(f"{tiling}_{quant}", {"compression.method": "tiled", "compression.tiling": tiling,
                                 "compression.quantize": quant})
          for tiling in ("penrose", "grid", "single") for quant in ("none", "int8", "int4")]
  rtn = [(f"rtn_{quant}", {"compression.method": "rtn", "compression.quantize": quant})
         for quant in ("int8", "int4")]
  runs += rtn
  if arg:
    runs = [runs[1], rtn[0]]
  return make_sweep_config(
      base, "compress", runs, title="bytes vs perplexity (low rank + quantization vs RTN)",
      description="Tiled runs: whitened rank blocks at param_ratio 0.6, stored values in "
                  "float32 / int8 / int4. RTN: every selected kernel quantized in place "
                  "(no low rank).",
      method_key=("compression.tiling",), group_labels={n: "rtn" for n, _ in rtn},
      plot_x="bytes_compressed", plot_y=("ppl_compressed",),
      columns=("model", "compression.method", "compression.tiling", "compression.whiten",
               "compression.param_ratio", "compression.quantize", "compression.group_size"))
