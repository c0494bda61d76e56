"""The `generate` job: chat or plain completion from any checkpoint, for one prompt or a file.

With `prompts_path` the model is loaded once for every prompt of the file and the prompts are
decoded `batch_size` at a time (`generation.generate_batch`: greedy answers equal one-by-one
decoding; sampled ones use one key per batch); answers go to DIR/generations.jsonl. A prompts
file is JSONL (`.jsonl`: one object per line with `prompt` or `question`; other fields, e.g. an
exam's `answer` or `doc_id`, are copied to the output line) or plain text (any other
extension: one prompt per non-blank line).
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Optional

import ml_collections

from penrose_jax.compression import inference
from penrose_jax.data import paths
from penrose_jax.io import model_registry
from penrose_jax.jobs import config_checks
from penrose_jax.jobs import workdir as workdir_guard
from penrose_jax.models import generation
from penrose_jax.reporting import report_json


def read_prompts(path: str | pathlib.Path) -> list[dict[str, Any]]:
  """Reads a prompts file.

  Args:
    path: a .jsonl file ({"prompt": ...} or {"question": ...} per line) or a text file (one
      prompt per non-blank line).

  Returns:
    One dict per prompt with 'prompt' (and, for JSONL, the line's other fields).

  Raises:
    ValueError: a missing file, bad JSON, or a line without a non-empty prompt (file and line
      named); an empty file.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise ValueError(f"{path}: prompts file not found")
  records = []
  for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
    if not line.strip():
      continue
    if path.suffix.lower() != ".jsonl":
      records.append({"prompt": line.strip()})
      continue
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as err:
      raise ValueError(f"{path}:{number}: invalid JSON ({err.msg})") from None
    text = obj.get("prompt", obj.get("question")) if isinstance(obj, dict) else None
    if not isinstance(text, str) or not text.strip():
      raise ValueError(f"{path}:{number}: needs a non-empty 'prompt' (or 'question') string")
    records.append({**{k: v for k, v in obj.items() if k not in ("prompt", "question")},
                    "prompt": text.strip()})
  if not records:
    raise ValueError(f"{path}: no prompts")
  return records


def _complete(loaded: Any, config: ml_collections.ConfigDict, prompt: str) -> str:
  """One completion (chat template or plain continuation) with the config's sampling."""
  if config.chat:
    return generation.chat(loaded.params, loaded.config, loaded.tokenizer, prompt,
                           max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                           top_p=config.top_p, seed=config.seed)
  ids = loaded.tokenizer.encode(prompt)
  out = generation.generate(loaded.params, loaded.config, ids, config.max_new_tokens,
                            temperature=config.temperature, top_p=config.top_p,
                            seed=config.seed, stop_token_ids=loaded.tokenizer.stop_token_ids)
  return loaded.tokenizer.decode(out)


def prompt_length(loaded: Any, config: ml_collections.ConfigDict, prompt: str) -> int:
  """Tokens the model reads for `prompt` (through the chat template when config.chat)."""
  if config.chat:
    prompt = loaded.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                  add_generation_prompt=True)
  return len(loaded.tokenizer.encode(prompt))


def check_prompts_fit(loaded: Any, config: ml_collections.ConfigDict, prompts: list[str],
                      where: str) -> None:
  """Raises ValueError naming the first prompt whose tokens plus max_new_tokens exceed the
  model's context (such a prompt had given an empty answer and no message).

  Args:
    loaded: the model_registry.Loaded.
    config: the generate config (chat, max_new_tokens).
    prompts: the prompts.
    where: the prompts' origin for the message (a file, or 'config.prompt').
  """
  context = loaded.config.max_position
  for index, prompt in enumerate(prompts):
    length = prompt_length(loaded, config, prompt)
    if length + config.max_new_tokens > context:
      raise ValueError(f"{where}: prompt {index + 1} is {length} tokens; with max_new_tokens="
                       f"{config.max_new_tokens} it exceeds the context of {loaded.name} "
                       f"({context} tokens): shorten it or lower max_new_tokens")


def _complete_all(loaded: Any, config: ml_collections.ConfigDict, prompts: list[str]
                  ) -> list[str]:
  """Completions of many prompts, `config.batch_size` decoded together, in prompt order."""
  sampling = dict(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                  top_p=config.top_p, seed=config.seed,
                  batch_size=config.get("batch_size", 16))
  if config.chat:
    return generation.chat_batch(loaded.params, loaded.config, loaded.tokenizer, prompts,
                                 **sampling)
  tokenizer = loaded.tokenizer
  outs = generation.generate_batch(loaded.params, loaded.config,
                                   [tokenizer.encode(p) for p in prompts],
                                   stop_token_ids=tokenizer.stop_token_ids, **sampling)
  return [tokenizer.decode(out) for out in outs]


def run(config: ml_collections.ConfigDict, workdir: Optional[str | pathlib.Path] = None
        ) -> dict[str, Any]:
  """Runs the job; with a workdir, in that claimed workdir (see `_run`, jobs/workdir.py)."""
  if workdir is None:
    config_checks.check_values(config)
    return _run(config, None)
  with workdir_guard.claim("generate", config, workdir):
    return _run(config, workdir)


def _run(config: ml_collections.ConfigDict, workdir: Optional[str | pathlib.Path] = None
         ) -> dict[str, Any]:
  """Generates for config.prompt, or for every prompt of config.prompts_path.

  Args:
    config: see configs/generate.py (model, prompt, prompts_path, chat, max_new_tokens,
      temperature, top_p, seed).
    workdir: output folder; DIR/report.json, and DIR/generations.jsonl with a prompts file
      (then required).

  Returns:
    The report dict: 'prompt', 'completion', 'new_tokens', 'tokens_per_s' for one prompt;
    'prompts', 'generations' (path), 'new_tokens', 'tokens_per_s', 'batch_size' for a prompts
    file.

  Raises:
    ValueError: a prompts file without a workdir, or an unusable prompts file.
  """
  start = time.time()
  prompts_path = config.get("prompts_path", "")
  records = None
  if prompts_path:
    if workdir is None:
      raise ValueError("generate with prompts_path needs --workdir (answers go to "
                       "DIR/generations.jsonl)")
    records = read_prompts(paths.resolve_data_path(prompts_path))  # checked before loading
  cache_dir = pathlib.Path(workdir or ".") / "model_cache"
  loaded = model_registry.load(config.model, cache_dir=cache_dir)
  # Decode spectral / quantized codecs and stack factors once, not inside every compiled step;
  # with share_layers, layers of one structure are stacked and scanned (one compiled block).
  loaded = loaded._replace(params=inference.prepare_for_inference(
      loaded.params, share_layers=config.get("share_layers", False)))
  check_prompts_fit(loaded, config, [config.prompt] if records is None else
                    [r["prompt"] for r in records], prompts_path or "config.prompt")
  gen_start = time.time()
  if records is None:
    text = _complete(loaded, config, config.prompt)
    gen_s = time.time() - gen_start
    new_tokens = len(loaded.tokenizer.encode(text))
    metrics = {"prompt": config.prompt, "completion": text, "new_tokens": new_tokens,
               "generate_s": gen_s, "tokens_per_s": new_tokens / max(gen_s, 1e-9)}
  else:
    lines = []
    texts = _complete_all(loaded, config, [record["prompt"] for record in records])
    for index, (record, text) in enumerate(zip(records, texts)):
      lines.append({"index": index, **record, "completion": text,
                    "new_tokens": len(loaded.tokenizer.encode(text))})
      print(f"[generate] {index + 1}/{len(records)}: {text[:80]!r}", flush=True)
    gen_s = time.time() - gen_start
    out = pathlib.Path(workdir) / "generations.jsonl"
    report_json.write_text_atomic(
        out, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    new_tokens = sum(line["new_tokens"] for line in lines)
    metrics = {"prompts": len(lines), "generations": str(out), "new_tokens": new_tokens,
               "generate_s": gen_s, "tokens_per_s": new_tokens / max(gen_s, 1e-9),
               "batch_size": config.get("batch_size", 16)}
  report = report_json.build_report("generate", config, loaded.name, time.time() - start, metrics)
  if workdir is not None:
    report_json.write_json_atomic(pathlib.Path(workdir) / "report.json", report)
  return report
