"""Peak memory of streaming compression on a synthetic Llama-shaped checkpoint of >= 1.5 B params.

Command (from the repo root, inside .venv):
  python benchmarks/compress_memory.py --out=/tmp/synthetic_llama_1p5b
Writes the checkpoint (float16 sharded safetensors, one shard per layer, ~3 GB), compresses it
with `experiments.compress` in a child process (so the generator's memory is not counted),
prints a table and saves results/benchmarks/compress_memory.json. The compress job holds one
layer at a time; whitening is off and the budget is per matrix so no calibration pass is
needed (the activations of a 1.5 B model's calibration set would be the dominant memory
otherwise, and they are bounded by calibration.num_windows, not by model size).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys
import time

import numpy as np
from safetensors.numpy import save_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from penrose_jax.io import model_registry  # noqa: E402


def write_synthetic_checkpoint(out: pathlib.Path, layers: int, hidden: int, intermediate: int,
                               heads: int, kv_heads: int, vocab: int, seed: int = 0) -> int:
  """Writes an HF Llama directory with random float16 weights, one shard per layer.

  Args:
    out: destination folder.
    layers, hidden, intermediate, heads, kv_heads, vocab: architecture.
    seed: RNG seed.

  Returns:
    Total parameter count.
  """
  out.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  head_dim = hidden // heads
  shards = layers + 1
  weight_map, total = {}, 0

  def rand(*shape):
    return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

  for i in range(layers):
    p = f"model.layers.{i}."
    tensors = {
        p + "self_attn.q_proj.weight": rand(heads * head_dim, hidden),
        p + "self_attn.k_proj.weight": rand(kv_heads * head_dim, hidden),
        p + "self_attn.v_proj.weight": rand(kv_heads * head_dim, hidden),
        p + "self_attn.o_proj.weight": rand(hidden, heads * head_dim),
        p + "mlp.gate_proj.weight": rand(intermediate, hidden),
        p + "mlp.up_proj.weight": rand(intermediate, hidden),
        p + "mlp.down_proj.weight": rand(hidden, intermediate),
        p + "input_layernorm.weight": np.ones(hidden, np.float16),
        p + "post_attention_layernorm.weight": np.ones(hidden, np.float16),
    }
    name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
    save_file(tensors, str(out / name), metadata={"format": "pt"})
    weight_map.update({k: name for k in tensors})
    total += sum(t.size for t in tensors.values())
  last = {"model.embed_tokens.weight": rand(vocab, hidden), "lm_head.weight": rand(vocab, hidden),
          "model.norm.weight": np.ones(hidden, np.float16)}
  name = f"model-{shards:05d}-of-{shards:05d}.safetensors"
  save_file(last, str(out / name), metadata={"format": "pt"})
  weight_map.update({k: name for k in last})
  total += sum(t.size for t in last.values())
  (out / "model.safetensors.index.json").write_text(json.dumps(
      {"metadata": {"total_size": total * 2}, "weight_map": weight_map}, indent=1))
  (out / "config.json").write_text(json.dumps({
      "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
      "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
      "num_attention_heads": heads, "num_key_value_heads": kv_heads, "rms_norm_eps": 1e-5,
      "rope_theta": 10000.0, "max_position_embeddings": 4096, "tie_word_embeddings": False,
      "bos_token_id": 0, "eos_token_id": 0, "torch_dtype": "float16"}, indent=1))
  # Any tokenizer with ids < vocab works: the tiny model's BPE tokenizer is reused.
  tiny = model_registry.build_tiny_model(out / "_tiny")
  model_registry.load(str(tiny)).tokenizer.save(out)
  return total


def main() -> None:
  """Generates the checkpoint (unless present), compresses it, prints and saves the result."""
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--out", default="/tmp/synthetic_llama_1p5b")
  parser.add_argument("--layers", type=int, default=31)
  parser.add_argument("--hidden", type=int, default=2048)
  parser.add_argument("--intermediate", type=int, default=5632)
  parser.add_argument("--heads", type=int, default=16)
  parser.add_argument("--kv_heads", type=int, default=4)
  parser.add_argument("--vocab", type=int, default=32000)
  parser.add_argument("--param_ratio", type=float, default=0.6)
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  start = time.time()
  if not (out / "config.json").exists():
    total = write_synthetic_checkpoint(out, args.layers, args.hidden, args.intermediate,
                                       args.heads, args.kv_heads, args.vocab)
  else:
    index = json.loads((out / "model.safetensors.index.json").read_text())
    total = index["metadata"]["total_size"] // 2
  gen_s = time.time() - start
  workdir = out.parent / (out.name + "_compressed")
  shutil.rmtree(workdir, ignore_errors=True)  # a measurement, not a resume: start from nothing
  cmd = [sys.executable, "-m", "experiments.compress", "--config=configs/compress.py",
         f"--config.model={out}", f"--workdir={workdir}", "--config.eval.enabled=False",
         "--config.compression.whiten=False", "--config.compression.budget_scope=matrix",
         f"--config.compression.param_ratio={args.param_ratio}", "--config.tiling_pictures="]
  timed = ["/usr/bin/time", "-v"] + cmd
  start = time.time()
  proc = subprocess.run(timed, cwd=ROOT, capture_output=True, text=True)
  wall = time.time() - start
  if proc.returncode != 0:
    sys.stderr.write(proc.stderr[-4000:])
    raise SystemExit(f"compress failed with exit code {proc.returncode}")
  max_rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)[1])
  report = json.loads((workdir / "report.json").read_text())
  result = {"params_total": total, "layers": args.layers, "hidden": args.hidden,
            "intermediate": args.intermediate, "generate_s": round(gen_s, 1),
            "compress_wall_s": round(wall, 1), "peak_rss_gib": round(max_rss_kib / 2**20, 3),
            "param_ratio": report["param_ratio"], "params_compressed": report["params_compressed"],
            "dense_f32_gib": round(total * 4 / 2**30, 2),
            # Flat after the first layers = nothing accumulates per layer (a leak grows here).
            "peak_rss_mib_after_layer": report["peak_rss_mib_after_layer"],
            "stage_s": report["stage_s"]}
  results_dir = ROOT / "results" / "benchmarks"
  results_dir.mkdir(parents=True, exist_ok=True)
  (results_dir / "compress_memory.json").write_text(json.dumps(result, indent=2) + "\n")
  print("| params | dense f32 | peak RSS | compress wall | param_ratio |")
  print("|---|---|---|---|---|")
  print(f"| {total / 1e9:.2f} B | {result['dense_f32_gib']} GiB | {result['peak_rss_gib']} GiB | "
        f"{wall:.0f} s | {report['param_ratio']:.3f} |")


if __name__ == "__main__":
  main()
