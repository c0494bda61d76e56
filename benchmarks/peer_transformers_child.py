"""Child of peer_transformers.py: runs in benchmarks/.peer_venv (torch + transformers).

Not importable from the package venv (it imports torch). Loads the GGUF with Hugging Face
transformers (dequantized to float32), writes the logits of the given tokens and prefill
tokens/s at the given batch sizes.

Usage: python peer_transformers_child.py GGUF TOKENS_NPY OUT_DIR BATCHES MIN_TIME
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import sys
import time

import numpy as np
import torch
import transformers


def main() -> None:
  """Loads the model, computes logits and timings, writes OUT_DIR/peer.json + logits.npy."""
  gguf, tokens_path, out_dir, batches, min_time = sys.argv[1:6]
  out = pathlib.Path(out_dir)
  torch.set_num_threads(os.cpu_count() or 1)
  path = pathlib.Path(gguf)
  start = time.time()
  model = transformers.AutoModelForCausalLM.from_pretrained(
      str(path.parent), gguf_file=path.name, dtype=torch.float32)
  model.eval()
  load_s = time.time() - start
  tokens = np.load(tokens_path)
  result = {"torch": torch.__version__, "transformers": transformers.__version__,
            "threads": torch.get_num_threads(), "load_s": load_s}
  with torch.inference_mode():
    logits = model(torch.from_numpy(tokens[:1]).long()).logits[0].float().numpy()
    np.save(out / "logits.npy", logits)
    for b in (int(x) for x in batches.split(",")):
      batch = torch.from_numpy(np.tile(tokens[:1], (b, 1))).long()
      model(batch)  # warm-up
      times, begin = [], time.perf_counter()
      while len(times) < 3 or time.perf_counter() - begin < float(min_time):
        t0 = time.perf_counter()
        model(batch)
        times.append(time.perf_counter() - t0)
      result[f"prefill_{b}x{tokens.shape[1]}_tok_s"] = b * tokens.shape[1] / statistics.median(times)
  (out / "peer.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
  main()
