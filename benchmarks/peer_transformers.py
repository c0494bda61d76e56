"""Peer comparison: the same SmolLM2 GGUF run by Hugging Face transformers on PyTorch CPU.

Command (from the repo root):
  python benchmarks/peer_transformers.py
First run creates benchmarks/.peer_venv (git-ignored) with `pip install torch==2.13.0` (the
CPU wheel the machine's pip finds; any other torch spec would pull CUDA packages) and
transformers + gguf, pinned below. transformers is never a dependency of the package: it only
lives in that venv. A child process (peer_transformers_child.py) loads the GGUF with
`gguf_file=`, writes the logits of a fixed 256-token sequence and prefill tokens/s at batch
1 x 256 and 8 x 256; this process runs our JAX forward (jitted, full logits, the same shapes
and the same timing method) on the same tokens and reports the max abs logits difference and
the tokens/s ratio. Prints a table; writes results/benchmarks/peer_transformers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Optional

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.inference_speed import measure_peak, time_call  # noqa: E402
from penrose_jax.io import find_default_gguf  # noqa: E402
from penrose_jax.io import model_registry  # noqa: E402
from penrose_jax.models import llama  # noqa: E402

VENV = ROOT / "benchmarks" / ".peer_venv"
CHILD = ROOT / "benchmarks" / "peer_transformers_child.py"
# torch: exactly this pin (a local CPU wheel exists for it). transformers 5.x loads GGUF
# Llama files through `gguf_file=` and supports torch 2.13; gguf is its GGUF reader and
# accelerate is required by its GGUF loading path.
REQUIREMENTS = ("torch==2.13.0", "transformers==5.23.0", "accelerate>=1.0", "gguf>=0.10", "numpy")


def ensure_venv(venv: pathlib.Path = VENV) -> pathlib.Path:
  """Creates the peer venv and installs the peer's packages once.

  Args:
    venv: venv folder.

  Returns:
    Its python executable.

  Raises:
    SystemExit: with pip's output when the install fails (e.g. no registry reachable).
  """
  python = venv / "bin" / "python"
  marker = venv / ".installed"
  if marker.exists() and marker.read_text() == "\n".join(REQUIREMENTS):
    return python
  if not python.exists():
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
  proc = subprocess.run([str(python), "-m", "pip", "install", "-q", *REQUIREMENTS],
                        capture_output=True, text=True)
  if proc.returncode != 0:
    raise SystemExit(
        f"peer_transformers: could not install {' '.join(REQUIREMENTS)} into {venv} "
        f"(pip exit {proc.returncode}). The peer needs PyPI (or a local wheel) for these "
        f"packages; pip said:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
  marker.write_text("\n".join(REQUIREMENTS))
  return python


def jax_prefill(params, config, tokens: np.ndarray, batches: list[int], min_time: float):
  """Our forward on the same tokens: logits of row 0 and prefill tokens/s per batch size.

  Args:
    params: dense params.
    config: the architecture.
    tokens: (1, T) token ids.
    batches: batch sizes (row 0 tiled, as in the child).
    min_time: seconds of timing per batch size.

  Returns:
    ((T, V) logits, {key: tokens/s}).
  """
  forward = jax.jit(lambda p, t: llama.forward(p, t, config).logits)
  logits = np.asarray(forward(params, jnp.asarray(tokens[:1])))[0]
  speeds = {}
  for b in batches:
    batch = jnp.asarray(np.tile(tokens[:1], (b, 1)))
    seconds = time_call(lambda: forward(params, batch), min_time=min_time)
    speeds[f"prefill_{b}x{tokens.shape[1]}_tok_s"] = b * tokens.shape[1] / seconds
  return logits, speeds


def main(argv: Optional[list[str]] = None) -> dict:
  """Runs peer and ours, prints the table and writes the JSON.

  Args:
    argv: command-line arguments (None: sys.argv).

  Returns:
    The result dict written to JSON.
  """
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gguf", default=None, help="GGUF file (default: the SmolLM2 wheel's)")
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--batches", default="1,8")
  parser.add_argument("--min_time", type=float, default=5.0)
  parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" /
                                           "peer_transformers.json"))
  args = parser.parse_args(argv)
  batches = [int(b) for b in args.batches.split(",") if b]
  gguf = pathlib.Path(args.gguf) if args.gguf else find_default_gguf()
  wall = time.time()
  python = ensure_venv()
  loaded = model_registry.load(str(gguf))
  # A fixed, reproducible token sequence of ordinary ids (not special tokens).
  tokens = np.random.default_rng(0).integers(100, loaded.config.vocab_size,
                                             (1, args.seq)).astype(np.int32)
  peak_before = measure_peak(2048, 1.0)
  with tempfile.TemporaryDirectory() as tmp:
    np.save(pathlib.Path(tmp) / "tokens.npy", tokens)
    proc = subprocess.run([str(python), str(CHILD), str(gguf), str(pathlib.Path(tmp) /
                                                                  "tokens.npy"),
                           tmp, args.batches, str(args.min_time)], capture_output=True, text=True)
    if proc.returncode != 0:
      raise SystemExit(f"peer child failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    peer = json.loads((pathlib.Path(tmp) / "peer.json").read_text())
    peer_logits = np.load(pathlib.Path(tmp) / "logits.npy")
  ours_logits, ours = jax_prefill(loaded.params, loaded.config, tokens, batches, args.min_time)
  peak_after = measure_peak(2048, 1.0)
  diff = np.abs(ours_logits.astype(np.float64) - peer_logits.astype(np.float64))
  rows = []
  for b in batches:
    key = f"prefill_{b}x{args.seq}_tok_s"
    rows.append({"shape": f"{b}x{args.seq}", "ours_tok_s": ours[key], "peer_tok_s": peer[key],
                 "ours_over_peer": ours[key] / peer[key]})
  result = {"job": "peer_transformers", "gguf": str(gguf), "model": loaded.name,
            "peer": {k: v for k, v in peer.items() if not k.startswith("prefill_")},
            "jax_version": jax.__version__, "seq": args.seq,
            "max_abs_logits_diff": float(diff.max()),
            "mean_abs_logits_diff": float(diff.mean()),
            "logits_scale": float(np.abs(peer_logits).max()),
            "argmax_agreement": float(np.mean(ours_logits.argmax(-1) == peer_logits.argmax(-1))),
            "rows": rows, "peak_before": peak_before, "peak_after": peak_after,
            "load_average": list(os.getloadavg()), "cpu_count": os.cpu_count(),
            "wall_s": time.time() - wall}
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=2) + "\n")
  print(f"peer: torch {peer['torch']}, transformers {peer['transformers']} "
        f"({peer['threads']} threads); ours: jax {jax.__version__}; load average "
        f"{result['load_average'][0]:.2f}; matmul peak {peak_before['gflops']:.0f} -> "
        f"{peak_after['gflops']:.0f} GFLOP/s")
  print(f"logits: max abs diff {result['max_abs_logits_diff']:.3g} (mean "
        f"{result['mean_abs_logits_diff']:.2g}, |logits| max {result['logits_scale']:.1f}), "
        f"argmax agreement {result['argmax_agreement']:.4f}")
  print("| prefill | ours tok/s | transformers tok/s | ours / peer |")
  print("|---|---|---|---|")
  for r in rows:
    print(f"| {r['shape']} | {r['ours_tok_s']:.0f} | {r['peer_tok_s']:.0f} | "
          f"{r['ours_over_peer']:.2f} |")
  return result


if __name__ == "__main__":
  main()
