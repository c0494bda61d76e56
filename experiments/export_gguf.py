"""Entrypoint: python -m experiments.export_gguf --config=configs/export_gguf.py \
--config.checkpoint=DIR/model --workdir=OUT."""

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli
from penrose_jax.jobs import export_gguf

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to configs/export_gguf.py.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  report = export_gguf.run(_CONFIG.value, _WORKDIR.value)
  print(f"file_size {report['file_size']} (source {report['source_file_size']})  "
        f"projection_bytes {report['projection_bytes']} (source "
        f"{report['source_projection_bytes']})  ppl {report.get('ppl_dense_by_set')} -> "
        f"{report.get('ppl_compressed_by_set')}  wall_s {report['wall_s']}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
