"""Batched generation speed: generated tokens/s of `generate_batch` vs batch size, against
one-by-one `generate` (issue 29).

Command (from the repo root; the real model loads, so take the machine's heavy-job lock):
  flock /tmp/heavy.lock python benchmarks/generation_batch.py --out=results/generation_batch/generation_batch.json
  python benchmarks/generation_batch.py --quick --out=/tmp/gb.json   # tiny random model, seconds

Prompts: SOFC-Exp dev entity-extraction prompts (`sofc_tasks.build_prompt(..., 'entities')` in
the chat template, as `extraction.generate_answers` sends them) whose length is within
--spread tokens of --prompt_tokens (the first --prompts of them, dev then train articles, in
document order: dev alone has 10 within 300 +- 40); --quick
draws random token prompts instead. Greedy, --max_new_tokens per prompt; stop ids are off by
default so every row emits exactly max_new_tokens and the token counts of all rows agree
(--stop turns the tokenizer's stop ids on, as extraction runs).

Timed, in one process on one model, each after its compile:
  * one_by_one: `generation.generate` per prompt (the path extraction, the exam, `generate`
    with a prompts file and model-written Q&A took before batching). Its compile is measured
    by a warm-up call per distinct (prompt bucket, cache bucket) shape, and the count of those
    compiled shapes is reported: it is one prefill and one decode program per 64-token bucket.
    prefill_s: the same prompts again with max_new_tokens=1 (prefill + first token).
  * batch_B for each --batch_sizes: `generation.generate_batch(batch_size=B)` over the same
    prompts. Compile time is the first call of the jitted batch program per shape, run with
    zero budgets (prefill only; the decode loop exits at once) less one such prefill;
    prefill_s: the timed pass's batches again with zero budgets.
decode_s = wall_s - prefill_s: the part batching amortises (prefill is compute-bound already).
Tokens/s = generated tokens / wall seconds of the timed pass; speedup = that / one_by_one's.
Greedy outputs of every batch size are checked equal to one_by_one's ('outputs_equal').
Writes JSON (--out) and prints a table. Measured: see results/generation_batch/reading.md.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import time
from typing import Any, Optional

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from penrose_jax.data import paths  # noqa: E402
from penrose_jax.evaluation import sofc_annotations, sofc_tasks  # noqa: E402
from penrose_jax.io import model_registry  # noqa: E402
from penrose_jax.models import generation, llama  # noqa: E402
from penrose_jax.models.linear import dense_equivalent  # noqa: E402
from penrose_jax.reporting import report_json  # noqa: E402


def sofc_prompts(tokenizer: Any, data_root: str, count: int, target: int, spread: int
                 ) -> list[list[int]]:
  """Token ids of the first `count` dev (then train) entity prompts within `spread` of `target`.

  Args:
    tokenizer: a TextTokenizer with a chat template.
    data_root: SOFC-Exp root.
    count: prompts wanted.
    target: prompt length aimed at.
    spread: allowed distance from target.

  Returns:
    The prompts (fewer than count when the split has too few).

  Raises:
    ValueError: the data root has no dev articles.
  """
  root = str(paths.resolve_data_path(data_root))
  # Dev alone has too few ~300-token entity prompts for a batch of 16; train follows it.
  articles = (sofc_annotations.load_articles(root, "dev")
              + sofc_annotations.load_articles(root, "train"))
  if not articles:
    raise ValueError(f"--data_root={data_root}: no dev / train articles (metadata.tsv expected)")
  out = []
  for article in articles:
    for sentence in sofc_tasks.task_sentences(article.sentences, "entities"):
      message = sofc_tasks.build_prompt(sentence.text, "entities")
      ids = tokenizer.encode(sofc_tasks.chat_prompt(tokenizer, message))
      if abs(len(ids) - target) <= spread:
        out.append(ids)
        if len(out) == count:
          return out
  return out


def _block(x):
  return jax.tree_util.tree_map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready")
                                else a, x)


def time_one_by_one(params, config, prompts, max_new_tokens, stops) -> dict[str, Any]:
  """Compile (one warm-up per shape) and timed pass of per-prompt `generate`."""
  shapes = {}
  for ids in prompts:  # one warm-up prompt per (prompt bucket, cache bucket) shape
    shapes.setdefault((generation._bucket(len(ids)),
                       generation._bucket(len(ids) + max_new_tokens)), ids)
  t0 = time.perf_counter()
  for ids in shapes.values():
    generation.generate(params, config, ids, max_new_tokens, stop_token_ids=stops)
  warm_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  outs = [generation.generate(params, config, ids, max_new_tokens, stop_token_ids=stops)
          for ids in prompts]
  wall = time.perf_counter() - t0
  t0 = time.perf_counter()
  for ids in prompts:  # prefill and the first token only (same compiled prefill)
    generation.generate(params, config, ids, 1, stop_token_ids=stops)
  prefill_s = time.perf_counter() - t0
  tokens = sum(len(o) for o in outs)
  # Warm-up ran whole prompts: their steady cost (the timed pass's mean) is taken off.
  compile_s = max(0.0, warm_s - len(shapes) * wall / len(prompts))
  return {"outputs": outs, "row": {
      "mode": "one_by_one", "batch_size": 1, "tokens": tokens, "wall_s": wall,
      "tokens_per_s": tokens / wall, "s_per_prompt": wall / len(prompts),
      "prefill_s": prefill_s, "decode_s": wall - prefill_s,
      "compile_s": compile_s, "compiled_shapes": 2 * len(shapes),
      "shapes": [list(s) for s in shapes]}}


def time_batched(params, config, prompts, max_new_tokens, stops, batch_size) -> dict[str, Any]:
  """Compile (zero-budget call per shape) and timed pass of `generate_batch`."""
  order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
  batches, start = [], 0
  for rows in generation.batch_sizes(len(order), batch_size):
    chunk = order[start:start + rows]
    start += rows
    batches.append((rows, generation.bucket_prompt_length(max(len(prompts[i]) for i in chunk))))
  shapes = sorted(set(batches))

  def prefill_only(rows, slots):  # zero budgets: the decode loop exits after the prefill
    _block(generation._generate_padded(
        params, jnp.zeros((rows, slots), jnp.int32), jnp.full((rows,), slots, jnp.int32),
        jnp.zeros((rows,), jnp.int32), jax.random.PRNGKey(0),
        jnp.asarray(sorted(set(stops)) or [-1], jnp.int32), config=config,
        max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0, pad_id=0))

  t0 = time.perf_counter()
  for rows, slots in shapes:
    prefill_only(rows, slots)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for rows, slots in batches:  # the prefills of the timed pass, on their own
    prefill_only(rows, slots)
  prefill_s = time.perf_counter() - t0
  compile_s = max(0.0, compile_s - prefill_s * len(shapes) / len(batches))
  t0 = time.perf_counter()
  outs = generation.generate_batch(params, config, prompts, max_new_tokens,
                                   stop_token_ids=stops, batch_size=batch_size)
  wall = time.perf_counter() - t0
  tokens = sum(len(o) for o in outs)
  return {"outputs": outs, "row": {
      "mode": f"batch_{batch_size}", "batch_size": batch_size, "tokens": tokens, "wall_s": wall,
      "tokens_per_s": tokens / wall, "s_per_prompt": wall / len(prompts),
      "prefill_s": prefill_s, "decode_s": wall - prefill_s,
      "compile_s": compile_s, "compiled_shapes": len(shapes),
      "shapes": [list(s) for s in shapes], "batches": [list(b) for b in batches]}}


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="default", help="model_registry.load spec")
  parser.add_argument("--quick", action="store_true", help="tiny random model, random prompts")
  parser.add_argument("--data_root", default="../shared/data/sofc_exp")
  parser.add_argument("--prompts", type=int, default=16)
  parser.add_argument("--prompt_tokens", type=int, default=300)
  parser.add_argument("--spread", type=int, default=40)
  parser.add_argument("--max_new_tokens", type=int, default=64)
  parser.add_argument("--batch_sizes", default="1,4,8,16")
  parser.add_argument("--stop", action="store_true", help="use the tokenizer's stop ids")
  parser.add_argument("--out", default="benchmarks/results/generation_batch.json")
  args = parser.parse_args(argv)
  batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
  start = time.perf_counter()
  if args.quick:
    loaded = model_registry.load("tiny", cache_dir=pathlib.Path(args.out).parent / "model_cache")
    rng = np.random.default_rng(0)
    lengths = rng.integers(max(1, args.prompt_tokens - args.spread),
                           args.prompt_tokens + args.spread + 1, args.prompts)
    prompts = [rng.integers(1, loaded.config.vocab_size, n).tolist() for n in lengths]
  else:
    loaded = model_registry.load(args.model, cache_dir=ROOT / "model_cache")
    prompts = sofc_prompts(loaded.tokenizer, args.data_root, args.prompts, args.prompt_tokens,
                           args.spread)
  # As evaluate / extraction / the exam decode: the dense equivalent, layers unrolled.
  params = dense_equivalent(loaded.params)
  config = loaded.config
  stops = tuple(loaded.tokenizer.stop_token_ids) if args.stop else ()
  load_s = time.perf_counter() - start
  base = time_one_by_one(params, config, prompts, args.max_new_tokens, stops)
  rows = [base["row"]]
  print(f"one_by_one: {base['row']['tokens_per_s']:.1f} tok/s", flush=True)
  for batch_size in batch_sizes:
    result = time_batched(params, config, prompts, args.max_new_tokens, stops, batch_size)
    row = result["row"]
    row["speedup"] = row["tokens_per_s"] / base["row"]["tokens_per_s"]
    row["outputs_equal"] = result["outputs"] == base["outputs"]
    rows.append(row)
    print(f"batch {batch_size}: {row['tokens_per_s']:.1f} tok/s ({row['speedup']:.2f}x), "
          f"compile {row['compile_s']:.1f} s, equal={row['outputs_equal']}", flush=True)
  report = {
      "model": "tiny" if args.quick else args.model, "prompts": len(prompts),
      "prompt_tokens": [len(p) for p in prompts], "max_new_tokens": args.max_new_tokens,
      "stop_ids": list(stops), "load_s": load_s, "rows": rows,
      "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                  "devices": [str(d) for d in jax.devices()],
                  "load_average": list(os.getloadavg())},
      "wall_s": time.perf_counter() - start}
  report_json.write_json_atomic(pathlib.Path(args.out), report)
  print("| mode | tokens | wall s | prefill s | tokens/s | speedup | compile s | shapes |")
  print("|---|---|---|---|---|---|---|---|")
  for row in rows:
    print(f"| {row['mode']} | {row['tokens']} | {row['wall_s']:.1f} | {row['prefill_s']:.1f} "
          f"| {row['tokens_per_s']:.1f} | {row.get('speedup', 1.0):.2f} | {row['compile_s']:.1f} "
          f"| {row['compiled_shapes']} |")
  return report


if __name__ == "__main__":
  main()
