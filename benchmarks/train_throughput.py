"""Training throughput: tokens/s and achieved FLOP/s of the alignment and Q&A train steps.

Command (from the repo root):
  python benchmarks/train_throughput.py            # SmolLM2-135M compressed (penrose, 0.6)
  python benchmarks/train_throughput.py --quick    # tiny random model, seconds
  (--layers=N keeps the first N decoder layers; --batch / --seq set the step shape.)

In one process: times a large square jnp.dot (the machine's measured float32 matmul peak),
then three jitted train steps built exactly as the jobs build them:
  * align:     KL alignment of the compressed student to the dense teacher
               (`make_alignment_loss` + `make_train_step`, student packed with
               `pack_compressed`, trainable = compressed leaves), teacher passed as constants;
  * qa:        the Q&A step (`qa.trainer.masked_lm_loss`) on the same packed student;
  * qa_dense:  the same Q&A step on the dense model, all params trainable.
Achieved FLOP/s = XLA cost-analysis FLOPs of the compiled step / median step time; reported
as a fraction of the measured peak. Prints a table; writes
results/benchmarks/train_throughput.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time
from typing import Any, Optional

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.inference_speed import compiled_flops, load_model, measure_peak  # noqa: E402
from penrose_jax.alignment.align import ObjectiveConfig, make_alignment_loss  # noqa: E402
from penrose_jax.compression.packing import pack_compressed  # noqa: E402
from penrose_jax.compression.transform import compress  # noqa: E402
from penrose_jax.qa.trainer import masked_lm_loss  # noqa: E402
from penrose_jax.training.optimizer import OptimizerConfig, make_optimizer  # noqa: E402
from penrose_jax.training.train_state import init_train_state, make_train_step  # noqa: E402
from penrose_jax.training.trainable import trainable_mask  # noqa: E402


def time_step(params: Any, mask: Any, loss_fn: Any, batch: dict, constants: Any, steps: int,
              min_time: float) -> dict:
  """Compiles and times one train step.

  Args:
    params: params to train (packed where compressed).
    mask: trainable mask with the structure of `params`.
    loss_fn: (params, batch, rng, constants) -> (loss, metrics).
    batch: one batch, reused for every timed update.
    constants: the step's constants argument (teacher params or None).
    steps: updates per timing round.
    min_time: keep timing rounds until this many seconds.

  Returns:
    compile_s, step_s (median), flops_per_step, loss_first/last.
  """
  optimizer = make_optimizer(OptimizerConfig(learning_rate=1e-5))
  step = make_train_step(loss_fn, optimizer, mask)
  state = init_train_state(params, optimizer, mask)
  start = time.time()
  compiled = step.lower(state, batch, constants).compile()
  compile_s = time.time() - start
  state, metrics, _ = compiled(state, batch, constants)  # warm-up
  first = float(metrics["loss"])
  times, begin = [], time.perf_counter()
  while len(times) < 2 or time.perf_counter() - begin < min_time:
    t0 = time.perf_counter()
    for _ in range(steps):
      state, metrics, _ = compiled(state, batch, constants)
    jax.block_until_ready(metrics["loss"])
    times.append((time.perf_counter() - t0) / steps)
  return {"compile_s": compile_s, "step_s": statistics.median(times),
          "flops_per_step": compiled_flops(compiled), "loss_first": first,
          "loss_last": float(metrics["loss"])}


def main(argv: Optional[list[str]] = None) -> dict:
  """Runs the benchmark, prints the table and writes the JSON.

  Args:
    argv: command-line arguments (None: sys.argv).

  Returns:
    The result dict written to JSON.
  """
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true", help="tiny random model")
  parser.add_argument("--layers", type=int, default=None, help="keep the first N layers")
  parser.add_argument("--tiling", default="penrose")
  parser.add_argument("--param_ratio", type=float, default=0.6)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--steps", type=int, default=2, help="updates per timing round")
  parser.add_argument("--min_time", type=float, default=5.0)
  parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" /
                                           "train_throughput.json"))
  args = parser.parse_args(argv)
  tiles = 16
  if args.quick:
    args.batch, args.seq, args.steps, args.min_time, tiles = 2, 32, 2, 0.2, 4
  wall = time.time()
  peak_before = measure_peak(512 if args.quick else 2048, 1.0)
  config, params, model_name = load_model(args.quick, args.layers)
  student, stats = compress(params, {"tiling": args.tiling, "param_ratio": args.param_ratio,
                                     "budget_scope": "matrix", "tiles_per_matrix": tiles,
                                     "whiten": False})
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, config.vocab_size, (args.batch, args.seq)), jnp.int32)
  align_batch = {"tokens": tokens}
  # The Q&A loss reads seq tokens and predicts seq - 1 of them; the mask marks answers.
  qa_batch = {"tokens": jnp.asarray(rng.integers(0, config.vocab_size,
                                                 (args.batch, args.seq + 1)), jnp.int32),
              "mask": jnp.ones((args.batch, args.seq + 1), jnp.float32)}
  qa_loss = lambda p, batch, rng_, constants: masked_lm_loss(p, batch, config)
  packed, packed_mask = pack_compressed(student, trainable_mask(student, "compressed"))
  runs = {
      "align": (packed, packed_mask, make_alignment_loss(config, ObjectiveConfig()), align_batch,
                params),
      "qa": (packed, packed_mask, qa_loss, qa_batch, None),
      "qa_dense": (params, trainable_mask(params, "all"), qa_loss, qa_batch, None),
  }
  rows = []
  for name, (p, mask, loss_fn, batch, constants) in runs.items():
    row = {"name": name, **time_step(p, mask, loss_fn, batch, constants, args.steps,
                                     args.min_time)}
    row["tokens_per_s"] = args.batch * args.seq / row["step_s"]
    row["achieved_gflops"] = row["flops_per_step"] / row["step_s"] / 1e9
    rows.append(row)
    print(f"[train_throughput] {name}: " + ", ".join(
        f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)), flush=True)
  peak_after = measure_peak(512 if args.quick else 2048, 1.0)
  peak = max(peak_before["gflops"], peak_after["gflops"])
  for row in rows:
    row["fraction_of_peak"] = row["achieved_gflops"] / peak
  result = {"job": "train_throughput", "quick": args.quick, "model": model_name,
            "num_layers": config.num_layers, "batch": args.batch, "seq": args.seq,
            "tiling": args.tiling, "param_ratio_target": args.param_ratio,
            "param_ratio": stats["param_ratio"], "peak_before": peak_before,
            "peak_after": peak_after, "peak_gflops": peak, "load_average": list(os.getloadavg()),
            "cpu_count": os.cpu_count(), "wall_s": time.time() - wall, "rows": rows}
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=2) + "\n")
  print(f"model: {model_name}; batch {args.batch} x {args.seq}; peak {peak_before['gflops']:.0f}"
        f" -> {peak_after['gflops']:.0f} GFLOP/s (before/after); load average "
        f"{result['load_average'][0]:.2f}")
  print("| step | tokens/s | step s | GFLOP/step | achieved GFLOP/s | fraction of peak | "
        "compile s |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['name']} | {r['tokens_per_s']:.0f} | {r['step_s']:.3f} | "
          f"{r['flops_per_step'] / 1e9:.2f} | {r['achieved_gflops']:.1f} | "
          f"{r['fraction_of_peak']:.2f} | {r['compile_s']:.0f} |")
  return result


if __name__ == "__main__":
  main()
