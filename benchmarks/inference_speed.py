"""Compressed inference speed: prefill and KV-cached decode tokens/s, dense vs compressed.

Command (from the repo root):
  python benchmarks/inference_speed.py            # SmolLM2-135M, all configs (slow: ~1 h)
  python benchmarks/inference_speed.py --quick    # tiny random model, seconds
  python benchmarks/inference_speed.py --ratios=0.6 --tilings=single,penrose --spectral_ratio=0 \
      --share_layers=both                          # per-layer vs shared compiled blocks
Options restrict the work: --tilings=penrose,grid --ratios=0.6 --num_layers=4 (first 4 decoder
layers of the real model, same matrix shapes; --layers is the same option)
--spectral_ratio=0 (no spectral variant). Quick 4-layer check at 0.6:
  python benchmarks/inference_speed.py --num_layers=4 --ratios=0.6 --min_time=1

In ONE process: loads the model, compresses it in-process with `compress()` (no whitening,
budget per matrix) for each tiling x param_ratio (+ one factor-scope DCT variant), and times
every model with the same jitted functions (compressed leaves run `compressed_matmul=
'factored'`, i.e. `leaf.matmul`, on the inference form of `compression.inference.
prepare_for_inference`: codecs such as the DCT coefficients decoded once at load, factors
stacked for the segment matmul; --share_layers=on times `share_layers=True` instead (layers cut
into at most 3 runs, each tile's rank padded to its largest within its run, each run scanned,
so one block compiles per run), =both times both forms; with either, a 'dense shared' row (the
scanned dense model) follows the dense reference row, which is always the unrolled dense
model; --stored_form times the stored leaves): prefill (full forward incl. logits) at batch
1 x T and 8 x T, and greedy decode at batch 1 with a KV cache. FLOPs per token come from XLA's
cost analysis of the compiled functions (of the unrolled program for scanned layers);
`compile_s` sums the compile times of the three programs (prefill per batch size, prompt
fill, decode step) and `prepare_s` is the load-time transform. A large square jnp.dot is
timed before and after, so the load of a shared machine shows in the numbers. Prints a markdown table and writes
results/benchmarks/inference_speed.json (or --out), rewritten after every model with
"complete": false until the last one is done.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import statistics
import sys
import time
from typing import Any, Callable, Optional

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from penrose_jax.compression.inference import (prepare_for_inference,  # noqa: E402
                                                rank_padding)
from penrose_jax.compression.transform import compress  # noqa: E402
from penrose_jax.models import llama  # noqa: E402
from penrose_jax.models.config import ModelConfig, tiny_config  # noqa: E402
from penrose_jax.reporting import report_json  # noqa: E402


def time_call(fn: Callable[[], Any], min_repeats: int = 3, min_time: float = 1.0) -> float:
  """Median wall seconds of `fn()` (blocked until ready) after one warm-up call.

  Args:
    fn: the call to time; its result is blocked on.
    min_repeats: at least this many timed calls.
    min_time: keep calling until this many seconds were spent timing.

  Returns:
    Median seconds per call (the median resists the other jobs of a shared machine).
  """
  jax.block_until_ready(fn())
  times, start = [], time.perf_counter()
  while len(times) < min_repeats or time.perf_counter() - start < min_time:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def compiled_flops(compiled: Any) -> float:
  """FLOPs of a compiled XLA executable from its cost analysis (0 if unavailable).

  Args:
    compiled: `jax.jit(f).lower(...).compile()`.

  Returns:
    The 'flops' entry.
  """
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", 0.0))


def program_flops(fn: Any, compiled: Any, params: Any, *args: Any) -> float:
  """FLOPs of one call of jitted `fn` on (params, *args).

  XLA's cost analysis counts a loop body once, so for params in the stacked-layers form
  (`llama.stack_layers`: a lax.scan over layers) the FLOPs are those of the same program
  lowered on the unrolled layers (lowering compiles nothing).

  Args:
    fn: the jitted function.
    compiled: its compiled executable for these arguments.
    params: the params it ran on.
    *args: the other arguments.

  Returns:
    FLOPs per call.
  """
  if llama.LAYER_RUNS not in params:
    return compiled_flops(compiled)
  return compiled_flops(fn.lower(llama.unstack_layers(params), *args))


def measure_peak(size: int = 2048, min_time: float = 1.0) -> dict:
  """The machine's measured float32 matmul rate: one large square jnp.dot.

  Args:
    size: matrix side.
    min_time: seconds of timing.

  Returns:
    {'size', 'seconds', 'gflops'}.
  """
  a = jnp.asarray(np.random.default_rng(0).normal(size=(size, size)), jnp.float32)
  dot = jax.jit(jnp.dot)
  seconds = time_call(lambda: dot(a, a), min_time=min_time)
  return {"size": size, "seconds": seconds, "gflops": 2.0 * size ** 3 / seconds / 1e9}


def load_model(quick: bool, layers: Optional[int] = None) -> tuple[ModelConfig, Any, str]:
  """The benchmark model: SmolLM2-135M (optionally its first `layers`) or the tiny one.

  Args:
    quick: tiny random model (`tiny_config` + `init_params`) instead of SmolLM2.
    layers: keep only the first N decoder layers (same shapes, less time).

  Returns:
    (config, params, name).
  """
  if quick:
    config = tiny_config(hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2,
                         head_dim=16, max_position=512)
    return config, llama.init_params(config), "tiny (random)"
  from penrose_jax.io import model_registry
  loaded = model_registry.load("default")
  config, params = loaded.config, loaded.params
  if layers is not None and layers < config.num_layers:
    params = {k: v for k, v in params.items()
              if not k.startswith("layers_") or int(k.split("_")[1]) < layers}
    config = dataclasses.replace(config, num_layers=layers)
  return config, params, loaded.name + (f" first {config.num_layers} layers" if layers else "")


def model_variants(params: Any, tilings: list[str], ratios: list[float],
                   spectral_ratio: float, tiles: int, stored_form: bool = False,
                   share_layers: str = "off"):
  """Yields (name, meta, params) for the dense model and every compressed configuration.

  Args:
    params: dense params.
    tilings: tiling kinds.
    ratios: param_ratio targets.
    spectral_ratio: ratio of the extra penrose + factor-scope DCT variant (0: none).
    tiles: tiles_per_matrix.
    stored_form: time the stored leaves, not their `prepare_for_inference` form.
    share_layers: 'on' (inference form with ranks aligned within runs of layers and the runs
      scanned: one compiled block per run), 'off' (one compiled block per layer) or 'both' (a row for
      each, from the same compressed params; the shared row's name ends in 'shared'). Unless
      'off', a 'dense shared' row (the dense layers scanned) follows the dense reference row.

  Yields:
    Dense first, then compressed models (compressed lazily: one held at a time).
  """
  dense_meta = {"tiling": None, "param_ratio_target": None, "spectral": "none"}
  yield "dense", dense_meta, params
  if share_layers != "off" and not stored_form:  # what scanning alone does to dense
    yield "dense shared", {**dense_meta, "share_layers": True}, llama.stack_layers(params)
  configs = [(t, r, "none") for r in ratios for t in tilings]
  if spectral_ratio > 0:
    configs.append(("penrose", spectral_ratio, "dct"))
  for tiling, ratio, spectral in configs:
    cfg = {"tiling": tiling, "param_ratio": ratio, "budget_scope": "matrix",
           "tiles_per_matrix": tiles, "whiten": False, "spectral": spectral}
    if spectral != "none":
      cfg["keep_energy"] = 0.98  # mild: keeps the ratio near the budget's, tests the decode cost
    start = time.time()
    compressed, stats = compress(params, cfg)
    meta = {"tiling": tiling, "param_ratio_target": ratio, "spectral": spectral,
            "param_ratio": stats["param_ratio"], "compress_s": time.time() - start,
            "form": "stored" if stored_form else "inference"}
    name = f"{tiling} {ratio}" + (f" {spectral}" if spectral != "none" else "")
    if stored_form:
      yield name, meta, compressed
      continue
    for shared in {"on": (True,), "off": (False,), "both": (False, True)}[share_layers]:
      start = time.time()
      prepared = prepare_for_inference(compressed, share_layers=shared)
      extra = {"prepare_s": time.time() - start, "share_layers": shared,
               "rank_padding": rank_padding(compressed) if shared else 0.0,
               # compiled blocks: scanned runs, or one per layer
               "layer_runs": (len(prepared[llama.LAYER_RUNS]) if llama.LAYER_RUNS in prepared
                              else sum(k.startswith("layers_") for k in prepared))}
      yield name + (" shared" if shared and share_layers == "both" else ""), {**meta, **extra}, \
          prepared
      del prepared


def benchmark_model(config: ModelConfig, params: Any, seq: int, batches: list[int],
                    decode_prompt: int, decode_steps: int, min_time: float) -> dict:
  """Prefill and decode speed and FLOPs of one params tree.

  Args:
    config: architecture (compressed_matmul='factored').
    params: dense or compressed params.
    seq: prefill length T.
    batches: prefill batch sizes.
    decode_prompt: prompt length before timed decoding.
    decode_steps: timed greedy decode steps at batch 1.
    min_time: seconds of timing per measurement.

  Returns:
    Dict of tokens/s, FLOPs per token and compile seconds.
  """
  row: dict = {}
  prefill = jax.jit(lambda p, t: llama.forward(p, t, config).logits[:, -1])
  for b in batches:
    tokens = jnp.asarray(np.random.default_rng(b).integers(0, config.vocab_size, (b, seq)),
                         jnp.int32)
    start = time.time()
    compiled = prefill.lower(params, tokens).compile()
    row[f"compile_prefill_{b}x{seq}_s"] = time.time() - start
    seconds = time_call(lambda: compiled(params, tokens), min_time=min_time)
    row[f"prefill_{b}x{seq}_tok_s"] = b * seq / seconds
    row[f"flops_per_token_prefill_{b}x{seq}"] = program_flops(prefill, compiled, params,
                                                              tokens) / (b * seq)

  cache_len = decode_prompt + decode_steps + 1

  def step(p, token, cache, index):
    out = llama.forward(p, token[:, None], config, cache=cache, cache_index=index)
    return jnp.argmax(out.logits[:, -1], -1).astype(jnp.int32), out.cache

  def fill(p, prompt, cache):
    out = llama.forward(p, prompt, config, cache=cache, cache_index=jnp.int32(0))
    return jnp.argmax(out.logits[:, -1], -1).astype(jnp.int32), out.cache

  prompt = jnp.asarray(np.random.default_rng(7).integers(0, config.vocab_size, (1, decode_prompt)),
                       jnp.int32)
  cache = llama.init_cache(config, 1, cache_len)
  start = time.time()
  fill_c = jax.jit(fill).lower(params, prompt, cache).compile()
  token, cache = fill_c(params, prompt, cache)
  row["compile_fill_s"] = time.time() - start
  start = time.time()
  step_jit = jax.jit(step, donate_argnums=(2,))
  step_c = step_jit.lower(params, token, cache, jnp.int32(0)).compile()
  row["compile_decode_s"] = time.time() - start
  row["compile_s"] = sum(v for k, v in row.items() if k.startswith("compile_") and k != "compile_s")
  row["flops_per_token_decode"] = program_flops(step_jit, step_c, params, token, cache,
                                                jnp.int32(0))

  def decode():
    tok, cch = token, jax.tree_util.tree_map(jnp.copy, cache)
    jax.block_until_ready(cch)
    t0 = time.perf_counter()
    for i in range(decode_steps):
      tok, cch = step_c(params, tok, cch, jnp.int32(decode_prompt + i))
    jax.block_until_ready(tok)
    return time.perf_counter() - t0

  decode()  # warm-up
  times, start = [], time.perf_counter()
  while len(times) < 3 or time.perf_counter() - start < min_time:
    times.append(decode())
  row["decode_tok_s"] = decode_steps / statistics.median(times)
  return row


def main(argv: Optional[list[str]] = None) -> dict:
  """Runs the benchmark, prints the table and writes the JSON.

  Args:
    argv: command-line arguments (None: sys.argv).

  Returns:
    The result dict written to JSON.
  """
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true", help="tiny random model, few configs")
  parser.add_argument("--tilings", default="single,grid,penrose")
  parser.add_argument("--ratios", default="0.8,0.6,0.4")
  parser.add_argument("--spectral_ratio", type=float, default=0.6,
                      help="param_ratio of the penrose + DCT variant; 0 disables it")
  parser.add_argument("--tiles", type=int, default=16, help="tiles_per_matrix")
  parser.add_argument("--layers", "--num_layers", dest="layers", type=int, default=None,
                      help="keep the first N decoder layers")
  parser.add_argument("--stored_form", action="store_true",
                      help="time stored leaves, not their prepare_for_inference form")
  parser.add_argument("--share_layers", default="off", choices=("on", "off", "both"),
                      help="compressed models: ranks aligned across layers and the layers "
                           "scanned (one compiled block), per-layer programs (what `generate` "
                           "runs), or a row of each (--quick: both)")
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--batches", default="1,8")
  parser.add_argument("--decode_prompt", type=int, default=64)
  parser.add_argument("--decode_steps", type=int, default=32)
  parser.add_argument("--min_time", type=float, default=2.0, help="seconds per measurement")
  parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" /
                                           "inference_speed.json"))
  args = parser.parse_args(argv)
  if args.quick:
    args.tilings, args.ratios, args.spectral_ratio = "grid,penrose", "0.6", 0.0
    args.tiles, args.seq, args.min_time, args.decode_prompt, args.decode_steps = 4, 32, 0.1, 8, 4
    args.share_layers = "both"
  tilings = [t for t in args.tilings.split(",") if t]
  ratios = [float(r) for r in args.ratios.split(",") if r]
  batches = [int(b) for b in args.batches.split(",") if b]
  wall = time.time()
  peak_before = measure_peak(512 if args.quick else 2048, min(args.min_time, 1.0))
  config, params, model_name = load_model(args.quick, args.layers)
  rows: list[dict] = []
  out = pathlib.Path(args.out)

  def result(peak_after: Optional[dict], complete: bool) -> dict:
    dense = rows[0]
    speed_keys = [f"prefill_{b}x{args.seq}_tok_s" for b in batches] + ["decode_tok_s"]
    for row in rows:
      for key in speed_keys:
        row["speedup_" + key.replace("_tok_s", "")] = row[key] / dense[key]
    return {"job": "inference_speed", "quick": args.quick, "model": model_name,
            "num_layers": config.num_layers, "seq": args.seq, "batches": batches,
            "complete": complete, "peak_before": peak_before, "peak_after": peak_after,
            "load_average": list(os.getloadavg()), "cpu_count": os.cpu_count(),
            "jax_version": jax.__version__, "wall_s": time.time() - wall, "rows": rows,
            "targets": _targets(rows, args.seq)}

  for name, meta, variant in model_variants(params, tilings, ratios, args.spectral_ratio,
                                            args.tiles, args.stored_form,
                                            args.share_layers):
    row = {"name": name, **meta, **benchmark_model(config, variant, args.seq, batches,
                                                   args.decode_prompt, args.decode_steps,
                                                   args.min_time)}
    rows.append(row)
    print(f"[inference_speed] {name}: " + ", ".join(
        f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)), flush=True)
    # Every finished model is on disk before the next one compiles, and its compiled programs
    # are dropped: on the full model the penrose + DCT variant's prefill did not compile (LLVM
    # ran out of code-section memory after ~12 min) and aborted the process, losing the rows.
    report_json.write_json_atomic(out, result(None, complete=False))
    jax.clear_caches()
  peak_after = measure_peak(512 if args.quick else 2048, min(args.min_time, 1.0))
  final = result(peak_after, complete=True)
  report_json.write_json_atomic(out, final)
  print(format_table(final, batches, args.seq))
  return final


def _targets(rows: list[dict], seq: int) -> dict:
  """Issue 20's comparisons: compile time over dense's, tiled over single and grid prefill.

  Args:
    rows: benchmark rows, the unrolled dense model first.
    seq: prefill length.

  Returns:
    {'<row>_compile_over_dense': ..., '<a>_over_<b>_prefill_<ratio>[_shared]': ...} (1 x seq
    prefill tokens/s ratios between layouts at one ratio and form).
  """
  key = f"prefill_1x{seq}_tok_s"
  by_name = {r["name"]: r for r in rows}
  out = {f"{r['name'].replace(' ', '_')}_compile_over_dense": r["compile_s"] / rows[0]["compile_s"]
         for r in rows[1:]}
  for ratio in sorted({r["param_ratio_target"] for r in rows if r["param_ratio_target"]}):
    for suffix in ("", " shared"):
      for a, b in (("penrose", "grid"), ("penrose", "single"), ("grid", "single")):
        ra, rb = by_name.get(f"{a} {ratio}{suffix}"), by_name.get(f"{b} {ratio}{suffix}")
        if ra and rb:
          out[f"{a}_over_{b}_prefill_{ratio}{suffix.replace(' ', '_')}"] = ra[key] / rb[key]
  return out


def format_table(result: dict, batches: list[int], seq: int) -> str:
  """Markdown table of a result dict."""
  heads = [f"prefill {b}x{seq} tok/s (x dense)" for b in batches]
  lines = [f"model: {result['model']}; matmul peak {result['peak_before']['gflops']:.0f} -> "
           f"{result['peak_after']['gflops']:.0f} GFLOP/s (before/after); load average "
           f"{result['load_average'][0]:.2f}",
           "| model | param_ratio | " + " | ".join(heads) +
           " | decode 1 tok/s (x dense) | MFLOP/token prefill | MFLOP/token decode | compile s |",
           "|---" * (6 + len(batches)) + "|"]
  for r in result["rows"]:
    cells = [f"{r[f'prefill_{b}x{seq}_tok_s']:.0f} ({r[f'speedup_prefill_{b}x{seq}']:.2f})"
             for b in batches]
    ratio = r.get("param_ratio")
    lines.append(f"| {r['name']} | {'1' if ratio is None else f'{ratio:.3f}'} | "
                 + " | ".join(cells)
                 + f" | {r['decode_tok_s']:.1f} ({r['speedup_decode']:.2f}) | "
                 f"{r[f'flops_per_token_prefill_{batches[0]}x{seq}'] / 1e6:.1f} | "
                 f"{r['flops_per_token_decode'] / 1e6:.1f} | {r['compile_s']:.1f} |")
  for k, v in result["targets"].items():
    lines.append(f"{k}: {v:.3f}")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
