"""The export_gguf job: a compressed checkpoint of a (tiny) GGUF model written back as GGUF,
sizes reported next to the source file's, the re-read file evaluated."""

import ml_collections
import numpy as np
import pytest

from configs import compress as compress_config
from configs import export_gguf as export_config
from penrose_jax.jobs import compress, export_gguf
from tests.test_io_gguf import write_tiny_gguf


def test_export_of_an_rtn_int4_checkpoint(tmp_path):
  source = tmp_path / "tiny.gguf"
  write_tiny_gguf(source)
  config = compress_config.get_config("quick")
  config.model = str(source)
  config.compression.method = "rtn"
  config.compression.quantize = "int4"
  config.eval.enabled = False
  report = compress.run(config, tmp_path / "rtn")
  # The honest reference: the tiny source file stores its kernels in F32.
  assert report["source_bytes"] == report["bytes_dense"]
  assert report["source_types"] == {"F32": 14}
  export = export_config.get_config()
  export.checkpoint = str(tmp_path / "rtn" / "model")
  export.source = str(source)
  export.model = str(source)
  export.embed_type = "F32"  # the tiny source's embedding is F32: keep it, so only kernels differ
  export.eval.text_sets = ml_collections.ConfigDict({"demo_corpus": "package:demo_corpus"})
  export.eval.skip_text_sets = ""
  export.eval.primary = "demo_corpus"
  export.eval.window = 32
  export.eval.max_windows = 2
  export.eval.hidden_kl_windows = 1
  out = export_gguf.run(export, tmp_path / "gguf")
  assert out["file_size"] == (tmp_path / "gguf" / "model.gguf").stat().st_size
  assert out["types"]["Q4_0"] == 14
  # Q4_0 stores 18 bytes per 32 weights, F32 4 bytes per weight.
  assert out["projection_bytes"] * 4 * 32 == out["source_projection_bytes"] * 18
  assert out["file_size"] < out["source_file_size"]
  # The RTN int4 blocks are copied as they are: the file is the checkpoint, to the logit.
  assert out["exact_kernels"] == 14 and out["requantization_rel_error"] == 0.0
  assert np.isfinite(out["ppl_dense"]) and out["ppl_compressed"] == out["ppl_dense"]
  assert out["logit_kl"] == pytest.approx(0.0, abs=1e-6)
