"""The `generate` job: chat or plain completion from any checkpoint."""

from __future__ import annotations

import pathlib
import time
from typing import Any, Optional

import ml_collections

from penrose_jax.jobs import model_source
from penrose_jax.models import generation
from penrose_jax.reporting import report_json


def run(config: ml_collections.ConfigDict, workdir: Optional[str | pathlib.Path] = None
        ) -> dict[str, Any]:
  """Generates an answer for config.prompt; writes DIR/report.json when a workdir is given.

  Args:
    config: see configs/generate.py (model, prompt, chat, max_new_tokens, temperature, top_p,
      seed).
    workdir: optional output folder.

  Returns:
    The report dict with 'prompt', 'completion', 'new_tokens', 'tokens_per_s'.
  """
  start = time.time()
  cache_dir = pathlib.Path(workdir or ".") / "model_cache"
  loaded = model_source.load(config.model, cache_dir=cache_dir)
  gen_start = time.time()
  if config.chat:
    text = generation.chat(loaded.params, loaded.config, loaded.tokenizer, config.prompt,
                           max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                           top_p=config.top_p, seed=config.seed)
  else:
    ids = loaded.tokenizer.encode(config.prompt)
    out = generation.generate(loaded.params, loaded.config, ids, config.max_new_tokens,
                              temperature=config.temperature, top_p=config.top_p,
                              seed=config.seed, stop_token_ids=loaded.tokenizer.stop_token_ids)
    text = loaded.tokenizer.decode(out)
  gen_s = time.time() - gen_start
  new_tokens = len(loaded.tokenizer.encode(text))
  metrics = {"prompt": config.prompt, "completion": text, "new_tokens": new_tokens,
             "generate_s": gen_s, "tokens_per_s": new_tokens / max(gen_s, 1e-9)}
  report = report_json.build_report("generate", config, loaded.name, time.time() - start, metrics)
  if workdir is not None:
    report_json.write_json_atomic(pathlib.Path(workdir) / "report.json", report)
  return report
