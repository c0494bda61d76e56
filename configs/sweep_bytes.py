"""Ablation: stored bytes vs perplexity: low rank (+int8 / int4) against plain RTN.

Command (from the repo root):
  python -m experiments.sweep --config=configs/sweep_bytes.py --workdir=workdirs/sweep_bytes \
      --config.results_dir=results/sweep_bytes
  python -m experiments.sweep --config=configs/sweep_bytes.py:quick --workdir=/tmp/sweep_bytes_q
  python -m experiments.sweep --config=configs/sweep_bytes.py:gptq \
      --workdir=workdirs/sweep_bytes_gptq --config.results_dir=results/sweep_bytes/gptq

`gptq` runs only RTN int4 (the reference, rerun so ratios come from one machine), GPTQ int4 /
int3, a GPTQ int3/int4 mix (int4 for k / v / o and down: 11.4 % of the float32 bytes), GPTQ
int3 + a rank-16 int8 correction of each rounding error (11.3 %) and RTN int3; the full variant
holds every run (a workdir holding the first 8 continues with the new ones). Merge a `gptq`
results folder into results/sweep_bytes with experiments.sweep_merge (see its docstring).
`gptq_below_source` runs the four runs of `gptq` below the source file's bytes (GPTQ mix,
int3 + correction, int3, RTN int3), for a workdir that already holds rtn_int4 / gptq_int4
elsewhere (results/sweep_bytes/gptq); merge both folders.
`gptq_g32` runs GPTQ int4 with one scale per 32 inputs (14.1 % of the float32 bytes): GGML's
Q4_0 block, so `export_gguf` writes it into a standard GGUF exactly (measured 2026-12-07:
results/sweep_bytes/reading.md, "GGUF out").
`alloc` runs `gptq_int4` (the reference: skipped where that workdir has it finished) and
`alloc_0.12` (NOT measured yet; in no other variant and run by no test):
the bytes allocator (compression.bytes_allocation) at bytes_ratio 0.12, each matrix one of
GPTQ int3 / int3 + rank-16 correction / int4 / int8 (candidates.DEFAULT_CANDIDATES) chosen
from its measured logit KL by an exact knapsack (the target: <= 12 % of the float32 bytes at
<= 1.15x dense). Command, in the GPTQ workdir so gptq_int4 and the dense perplexities are
reused (its results.csv then holds these two rows until the `gptq` variant is rerun there):
  python -m experiments.sweep --config=configs/sweep_bytes.py:alloc \
      --workdir=workdirs/sweep_bytes_gptq --config.results_dir=results/sweep_bytes/alloc
Expected cost on the 2-core CPU machine (estimated from parts timed 2026-12-07 under load
average 6, not a run): the KL pass puts each of 210 matrices in turn, as each of the 4
candidates, through the rest of the model on 2 x 256 tokens: 4 x 3,255 block forwards at
~0.16 s (one SmolLM2-shaped block, random weights) = ~35 min, plus 840 LM heads (~3 min) and the
dense Grams of 64 calibration windows (~4 min); building the candidates (GPTQ int3 / int4 /
int8 + the rank-16 correction on random matrices of SmolLM2's 7 shapes: 10 s per layer) ~5 min.
Then the compress itself as a GPTQ run (~10 min: calibration, GPTQ, evaluation). About
55-70 min in all; the per-candidate KL tables are cached in
DIR/spectra_cache, so other bytes_ratio values then take only the ~10 min compress.

Runs the `compress` job on SmolLM2-135M with configs/compress.py's strong baseline (one whitened
SVD per matrix, sensitivity knapsack) at param_ratio 0.8 and 0.6 with the stored values in
float32 / int8 / int4 (group size 64), and the plain round-to-nearest baseline method='rtn'
with int8 / int4 on the dense kernels (group size 64). The float32 runs are configs/
sweep_ratio.py's single_0.8 / single_0.6 (link their run folders into DIR/runs and copy its
DIR/spectra_cache/sensitivity_*.json to reuse them and the sensitivity table).
Produces DIR/results.csv, DIR/report.md (the bytes / perplexity table), DIR/plots/
bytes_compressed_vs_ppl_compressed.png (one line per storage format, plus the dense point),
DIR/runs/<name>/. The earlier sweep of this file (tiled layouts at a global greedy budget) is in
results/README.md ("Earlier measurements"). quick (tiny model, 2 runs: penrose int8, rtn int8):
measured 21 s inside the test run, ~30 s as a command.
"""

import ml_collections

from configs import compress as compress_config
from configs.sweep_tiling import quick_compress_base
from penrose_jax.jobs.sweep import make_sweep_config

RATIOS = (0.8, 0.6)
QUANT = ("none", "int8", "int4")


RTN_QUANT = ("int8", "int4", "int3")
GPTQ_QUANT = ("int8", "int4", "int3")
# The runs the `gptq` variant measures together (ratios within one run of the machine).
# A llama.cpp-style mix (its Q3_K_M keeps attn_v / attn_output / ffn_down at higher bits):
# int4 for k / v / o and down (40.6 % of the projection weights), int3 elsewhere: 11.4 % of the
# float32 bytes.
MIX = ("attn/(k|v|o)_proj=int4", "mlp/down_proj=int4")
# The bytes allocator at 12 % of the float32 bytes (default candidate menu); variant `alloc`.
ALLOC = ("alloc_0.12", {"compression.bytes_ratio": 0.12})
GPTQ_MEASURED = ("rtn_int4", "gptq_int4", "gptq_mix34", "gptq_int3_r16", "gptq_int3",
                 "rtn_int3")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the bytes sweep; `quick` runs Penrose int8 and RTN int8 on the tiny model, `gptq`
  only RTN int4 / int3 and GPTQ int4 / int3 on SmolLM2."""
  if arg not in ("", "quick", "gptq", "gptq_below_source", "gptq_g32", "alloc"):
    raise ValueError(f"configs/sweep_bytes.py: unknown variant {arg!r}; expected '', 'quick', "
                     "'gptq', 'gptq_below_source', 'gptq_g32' or 'alloc'")
  rtn = [(f"rtn_{quant}", {"compression.method": "rtn", "compression.quantize": quant})
         for quant in RTN_QUANT]
  gptq = [(f"gptq_{quant}", {"compression.method": "gptq", "compression.quantize": quant})
          for quant in GPTQ_QUANT]
  gptq.append(("gptq_mix34", {"compression.method": "gptq", "compression.quantize": "int3",
                              "compression.quantize_overrides": MIX}))
  # GPTQ int3 plus a whitened rank-16 int8 correction of each matrix's rounding error: 11.3 %.
  gptq.append(("gptq_int3_r16", {"compression.method": "gptq", "compression.quantize": "int3",
                                 "compression.correction_rank": 16}))
  # GPTQ int4 with one scale per 32 inputs: GGML's Q4_0 block, so export_gguf copies it exactly.
  gptq.append(("gptq_int4_g32", {"compression.method": "gptq", "compression.quantize": "int4",
                                 "compression.group_size": 32}))
  if arg == "quick":
    base = quick_compress_base()
    base.compression.param_ratio = 0.6
    runs = [("penrose_int8", {"compression.tiling": "penrose", "compression.quantize": "int8"}),
            rtn[0]]
    labels = {}
  else:
    base = compress_config.get_config()  # single, sensitivity knapsack
    base.eval.skip_text_sets = "demo_corpus"
    runs = []
    for ratio in RATIOS:
      for quant in QUANT:
        overrides = {} if ratio == 0.8 else {"compression.param_ratio": ratio}
        if quant != "none":
          overrides["compression.quantize"] = quant
        runs.append((f"single_{ratio}" if quant == "none" else f"single_{ratio}_{quant}",
                     overrides))
    labels = {name: f"low rank {overrides.get('compression.quantize', 'float32')}"
              for name, overrides in runs}
    runs += rtn + gptq
    if arg == "gptq":
      runs = [(name, dict(runs)[name]) for name in GPTQ_MEASURED]
    elif arg == "gptq_below_source":
      runs = [(name, dict(runs)[name]) for name in GPTQ_MEASURED[2:]]
    elif arg == "gptq_g32":
      runs = [("gptq_int4_g32", dict(runs)["gptq_int4_g32"])]
    elif arg == "alloc":
      runs = [("gptq_int4", dict(runs)["gptq_int4"]), ALLOC]
  labels.update({name: "rtn" for name, _ in rtn})
  labels.update({name: "gptq" for name, _ in gptq})
  labels["gptq_mix34"] = "gptq int3/int4 mix"
  labels["gptq_int3_r16"] = "gptq int3 + rank-16 correction"
  labels[ALLOC[0]] = "bytes allocator (gptq mix by measured KL)"
  return make_sweep_config(
      base, "compress", runs, title="bytes vs perplexity (low rank + quantization vs RTN)",
      description="Low-rank runs: one whitened SVD per matrix at param_ratio 0.8 / 0.6, stored "
                  "values in float32 / int8 / int4. RTN: every selected kernel quantized in "
                  "place (no low rank). GPTQ: the same stored format as RTN, rounded with "
                  "error feedback on the calibration Hessian (act-order, clipping search). "
                  "'source file': the same matrices as stored in the GGUF the model was read "
                  "from, at the dense perplexity.",
      method_key=("compression.quantize",), group_labels=labels,
      plot_x="bytes_compressed", plot_y=("ppl_compressed", "ppl_compressed_by_set.lambada"),
      columns=("model", "compression.method", "compression.tiling", "compression.whiten",
               "compression.param_ratio", "compression.quantize", "compression.group_size"))
