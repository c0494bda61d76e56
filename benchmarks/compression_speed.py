"""Compression speed: where a compress run spends its time, and how the SVD scales.

Command (from the repo root):
  python benchmarks/compression_speed.py            # SmolLM2-135M + matrices up to 2048 (~25 min)
  python benchmarks/compression_speed.py --quick    # tiny random model + small matrices, ~1 min
  (--sizes=256,512,... sets the scaling sizes; --skip_model skips part 1.)

Part 1, stages: the compress job (`penrose_jax.jobs.compress.run`, configs/compress.py, its
evaluation off since it is not compression) on the default model, once with the exact per-tile
SVD and once with the randomized one, reading the job's own `stage_s` (load, calibrate,
pass-1 calibrate / factor, factor, build_leaves, write), wall time, peak RSS of the process,
and the quality cost of the randomized SVD (mean relative Frobenius error of the compressed
matrices, share of matrices whose per-tile ranks are identical).

Part 2, scaling: for n x n and n x 4n matrices with a power-law spectrum (sigma_i ~ i^-0.5,
about as flat as trained weights), the wall time of LAPACK's SVD (what the exact path calls)
vs `rank_blocks.randomized_svd` at the break-even rank (what the randomized path computes) and
at n/8, with the randomized result's error: max relative error of the kept singular values and
the excess truncation error ||A - A_k|| / ||A - A_k^exact|| - 1. The log-log slope of time vs n
says whether time tracks the O(n^3) SVD cost.

Prints tables; writes results/benchmarks/compression_speed.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import sys
import tempfile
import time
from typing import Any, Optional

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from configs import compress as compress_config  # noqa: E402
from penrose_jax.compression import rank_blocks  # noqa: E402
from penrose_jax.jobs import compress  # noqa: E402
from penrose_jax.reporting import markdown  # noqa: E402


def power_law_matrix(m: int, n: int, seed: int = 0, exponent: float = 0.5) -> np.ndarray:
  """A (m, n) float64 matrix with singular values (i + 1)^-exponent and random vectors.

  Args:
    m: rows.
    n: cols.
    seed: RNG seed.
    exponent: spectral decay exponent.

  Returns:
    The matrix.
  """
  rng = np.random.default_rng(seed)
  k = min(m, n)
  u, _ = np.linalg.qr(rng.standard_normal((m, k)))
  v, _ = np.linalg.qr(rng.standard_normal((n, k)))
  return (u * (np.arange(1, k + 1) ** -exponent)) @ v.T


def _best_of(fn, repeats: int) -> tuple[float, Any]:
  best, out = float("inf"), None
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    best = min(best, time.perf_counter() - start)
  return best, out


def scaling_rows(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
  """Exact vs randomized SVD time and error per matrix shape.

  Args:
    sizes: n values; shapes n x n and n x 4n are timed.
    repeats: best-of repeats per timing.

  Returns:
    One row per (shape, rank) with times and errors.
  """
  rows = []
  for n in sizes:
    for m, w in ((n, n), (n, 4 * n)):
      a = power_law_matrix(m, w, seed=n)
      exact_s, (u, s, vt) = _best_of(lambda: np.linalg.svd(a, full_matrices=False), repeats)
      for label, k in (("break-even", rank_blocks.break_even_rank(m, w)), ("n/8", n // 8)):
        rand_s, (ru, rs, rvt) = _best_of(lambda: rank_blocks.randomized_svd(a, k), repeats)
        best_err = float(np.sqrt(np.sum(s[k:] ** 2)))
        err = float(np.linalg.norm(a - (ru * rs) @ rvt))
        rows.append({"shape": [m, w], "rank": k, "rank_rule": label, "exact_s": exact_s,
                     "randomized_s": rand_s, "speedup": exact_s / rand_s,
                     "sigma_max_rel_err": float(np.max(np.abs(rs - s[:k]) / s[:k])),
                     "excess_trunc_err": err / best_err - 1.0})
  return rows


def log_log_slope(xs: list[float], ys: list[float]) -> Optional[float]:
  """Least-squares slope of log(y) against log(x) (None for fewer than two points).

  Args:
    xs: sizes.
    ys: times.

  Returns:
    The slope.
  """
  if len(xs) < 2:
    return None
  return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def stage_run(quick: bool, svd_method: str, workdir: pathlib.Path) -> dict[str, Any]:
  """One compress job (evaluation off) with this SVD method.

  Args:
    quick: tiny model (configs/compress.py:quick) instead of the default model.
    svd_method: 'exact' or 'randomized'.
    workdir: job folder.

  Returns:
    stage_s, wall_s, param_ratio, mean matrix error, per-matrix ranks, peak RSS so far.
  """
  config = compress_config.get_config("quick" if quick else "")
  config.eval.enabled = False
  config.compression.svd_method = svd_method
  # The setting results/benchmarks/compression_speed.json was measured with (both passes of
  # the streaming job: Penrose tiles, one model-wide budget at 0.6), not the current default.
  config.compression.tiling = "penrose"
  config.compression.budget_scope = "global"
  config.compression.param_ratio = 0.6
  report = compress.run(config, workdir)
  rows = report["matrices"]
  return {"svd_method": svd_method, "wall_s": report["wall_s"], "stage_s": report["stage_s"],
          "param_ratio": report["param_ratio"],
          "mean_rel_fro_error": float(np.mean([r["rel_fro_error"] for r in rows])),
          "ranks": {r["name"]: r.get("ranks") for r in rows},
          "peak_rss_mib_so_far": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def main(argv: Optional[list[str]] = None) -> dict:
  """Runs both parts, prints the tables and writes the JSON.

  Args:
    argv: command-line arguments (default sys.argv[1:]).

  Returns:
    The result dict written to --out.
  """
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--skip_model", action="store_true")
  parser.add_argument("--sizes", default="")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" /
                                           "compression_speed.json"))
  args = parser.parse_args(argv)
  sizes = ([int(s) for s in args.sizes.split(",") if s] if args.sizes
           else ([64, 128] if args.quick else [256, 512, 1024, 2048]))
  result: dict[str, Any] = {"quick": args.quick, "stages": [], "scaling": []}
  if not args.skip_model:
    with tempfile.TemporaryDirectory(prefix="compression_speed_") as tmp:
      for method in ("exact", "randomized"):
        run = stage_run(args.quick, method, pathlib.Path(tmp) / method)
        result["stages"].append(run)
        print(f"[stages] {method}: {run['wall_s']:.1f} s", flush=True)
    exact, rand = result["stages"]
    same = [exact["ranks"][k] == rand["ranks"].get(k) for k in exact["ranks"]]
    result["randomized_vs_exact"] = {
        "same_ranks_fraction": float(np.mean(same)),
        "mean_rel_fro_error_exact": exact["mean_rel_fro_error"],
        "mean_rel_fro_error_randomized": rand["mean_rel_fro_error"]}
    for run in result["stages"]:
      del run["ranks"]  # compared above; too long for the JSON
  result["scaling"] = scaling_rows(sizes, args.repeats)
  for shape_kind, pick in (("n x n", lambda r: r["shape"][0] == r["shape"][1]),
                           ("n x 4n", lambda r: r["shape"][1] == 4 * r["shape"][0])):
    rows = [r for r in result["scaling"] if pick(r) and r["rank_rule"] == "break-even"]
    result.setdefault("time_vs_n_slope", {})[shape_kind] = {
        "exact": log_log_slope([r["shape"][0] for r in rows], [r["exact_s"] for r in rows]),
        "randomized": log_log_slope([r["shape"][0] for r in rows],
                                    [r["randomized_s"] for r in rows])}

  if result["stages"]:
    names = sorted({k for run in result["stages"] for k in run["stage_s"]})
    print("\nCompress job stages (seconds; evaluation off)\n")
    print(markdown.table(["svd", "wall"] + names + ["param_ratio", "mean rel err"],
                 [[r["svd_method"], r["wall_s"]] + [r["stage_s"].get(n, 0.0) for n in names]
                  + [r["param_ratio"], r["mean_rel_fro_error"]] for r in result["stages"]]))
    print(f"\nrandomized vs exact: {result['randomized_vs_exact']}")
  print("\nSVD scaling (power-law spectrum; best of "
        f"{args.repeats})\n")
  print(markdown.table(["shape", "rank", "rule", "exact s", "randomized s", "speed-up",
                "sigma rel err", "excess trunc err"],
               [[f"{r['shape'][0]}x{r['shape'][1]}", r["rank"], r["rank_rule"], r["exact_s"],
                 r["randomized_s"], r["speedup"], r["sigma_max_rel_err"],
                 r["excess_trunc_err"]] for r in result["scaling"]]))
  print(f"\nlog-log slope of time vs n: {result['time_vs_n_slope']}")
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=2) + "\n")
  return result


if __name__ == "__main__":
  main()
