"""The pipeline demo's Q&A stage alone on SmolLM2-135M-Instruct (issue 28), as in reading.md.

Usage (repo root): PENROSE_SHARED_DIR=/nonexistent/x python results/demo/qa_stage_real/run_qa_stage.py \
    CONFIG_JSON WORKDIR
CONFIG_JSON: configs/pipeline.py:demo's qa_tune section with model='default', trainable='all'
(no compressed model is at hand; 'all' trains every weight at the same recipe rate, 1e-4).
Then the chat prompt to the tuned and the base model, into WORKDIR/chat.json.
"""
import json
import pathlib
import sys
import time

import ml_collections

from penrose_jax.io import model_registry
from penrose_jax.jobs import qa_tune
from penrose_jax.models import generation

PROMPT = "What is the capital of France?"
config = ml_collections.ConfigDict(json.loads(pathlib.Path(sys.argv[1]).read_text()))
workdir = pathlib.Path(sys.argv[2])
start = time.time()
report = qa_tune.run(config, workdir)
chat = {"prompt": PROMPT, "qa_tune_wall_s": time.time() - start}
for name, spec in (("tuned", str(workdir / "model")), ("base", "default")):
  loaded = model_registry.load(spec, cache_dir=workdir / "model_cache")
  chat[name] = generation.chat(loaded.params, loaded.config, loaded.tokenizer, PROMPT,
                               max_new_tokens=48)
  print(f"[chat {name}] {chat[name]}", flush=True)
  (workdir / "chat.json").write_text(json.dumps(chat, indent=1))
