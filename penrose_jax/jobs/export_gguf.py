"""The `export_gguf` job: write a (compressed) model checkpoint as a GGUF file, read it back.

Outputs in the workdir:
  model.gguf    the file (io/gguf_writer.py: Q8_0 / Q4_0 for int8 / int4 / int3 kernels,
                `dense_type` for float and low-rank kernels, `embed_type` for the embedding)
  report.json   file_size and the source GGUF's size, projection bytes in both files, tensor
                types, how many quantized kernels were copied block for block
                (`exact_kernels`), the re-rounding error GGML's blocks added elsewhere, and
                (eval.enabled) the perplexity per text set of the checkpoint (ppl_dense*) and
                of the file as this package reads it back (ppl_compressed*), with their logit
                KL.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import ml_collections

from penrose_jax import io as pio
from penrose_jax.io import model_registry
from penrose_jax.io.gguf_writer import write_gguf
from penrose_jax.jobs import compress
from penrose_jax.models.linear import dense_equivalent
from penrose_jax.reporting import report_json
from penrose_jax.reporting.stage_timer import StageTimer


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
  """Writes config.checkpoint as DIR/model.gguf and reports its size (and perplexity).

  Args:
    config: see configs/export_gguf.py (checkpoint, source, dense_type, embed_type, eval).
    workdir: output folder.

  Returns:
    The report dict (also DIR/report.json).
  """
  start = time.time()
  timer = StageTimer()
  workdir = pathlib.Path(workdir)
  source = pio.find_default_gguf() if config.source == "default" else pathlib.Path(
      config.source).expanduser()
  if source.suffix != ".gguf" or not source.is_file():
    raise FileNotFoundError(f"config.source={config.source!r}: {source} is not a .gguf file")
  with timer.stage("load"):
    loaded = model_registry.load(config.checkpoint)
  with timer.stage("write"):
    written = write_gguf(workdir / "model.gguf", loaded.params, source, config.dense_type,
                         config.embed_type)
  paths = [f"layers_{i}/{group}/{name}/kernel" for i in range(loaded.config.num_layers)
           for group, name in (("attn", "q_proj"), ("attn", "k_proj"), ("attn", "v_proj"),
                               ("attn", "o_proj"), ("mlp", "gate_proj"), ("mlp", "up_proj"),
                               ("mlp", "down_proj"))]
  with timer.stage("load"):
    source_bytes = model_registry.source_bytes(str(source), paths)
  metrics: dict[str, Any] = {
      "file_size": written["file_size"], "source_file": str(source),
      "source_file_size": source_bytes["file_size"], "types": written["types"],
      "projection_bytes": written["projection_bytes"],
      "source_projection_bytes": source_bytes["bytes"],
      "exact_kernels": written["exact_kernels"],
      "requantization_rel_error": written["requantization_rel_error"]}
  if config.eval.enabled:
    with timer.stage("load"):
      reread = model_registry.load(str(workdir / "model.gguf"))
    with timer.stage("eval"):
      evaluated = compress.evaluate_pair(config, dense_equivalent(loaded.params), reread.params,
                                         loaded.config, loaded.tokenizer)
    metrics["skipped"] = evaluated.pop("skipped")
    metrics.update(evaluated)
  metrics["stage_s"] = timer.rounded()
  report = report_json.build_report("export_gguf", config, loaded.name, time.time() - start,
                                    metrics)
  report_json.write_json_atomic(workdir / "report.json", report)
  return report
