"""Write a compressed checkpoint as a GGUF file and read it back (jobs/export_gguf.py).

Command (from the repo root):
  python -m experiments.export_gguf --config=configs/export_gguf.py \
      --config.checkpoint=workdirs/sweep_bytes_gptq/runs/gptq_int4/model --workdir=workdirs/gguf
Produces DIR/model.gguf and DIR/report.json (file_size next to the source file's, projection
bytes, tensor types, requantization_rel_error, and with eval.enabled the perplexity of the
checkpoint (ppl_dense*) and of the re-read file (ppl_compressed*) on SOFC dev and LAMBADA with
the compress job's evaluation settings). Time: ~10 s to write SmolLM2-135M; the evaluation
adds two perplexity passes (~3-4 min on the 2-core machine). The tests build a tiny GGUF and
run this job on it with eval.max_windows=2.
"""

import ml_collections

from configs import compress as compress_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the export config (no variants: the tests point it at a tiny GGUF)."""
  if arg:
    raise ValueError(f"configs/export_gguf.py: unknown variant {arg!r}; expected ''")
  config = ml_collections.ConfigDict()
  config.checkpoint = ""        # a compress run's DIR/model (or any model spec)
  config.source = "default"     # the GGUF the checkpoint was compressed from
  config.model = "default"      # names the source in the evaluation's records
  config.dense_type = "F16"     # float / low-rank kernels: 'F32' | 'F16' | 'Q8_0' | 'Q4_0' | 'Q4_1'
  config.embed_type = "Q8_0"    # embedding and untied LM head
  config.eval = compress_config.get_config().eval
  config.eval.skip_text_sets = "demo_corpus"
  config.eval.enabled = True
  return config
