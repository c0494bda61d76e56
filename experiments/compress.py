"""Entrypoint: python -m experiments.compress --config=configs/compress.py[:quick] --workdir=DIR."""

from absl import flags, logging
from ml_collections import config_flags

from experiments import cli
from penrose_jax.jobs import compress

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (rerun to resume).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  report = compress.run(_CONFIG.value, _WORKDIR.value)
  print(f"param_ratio {report['param_ratio']:.4f}  ppl {report.get('ppl_dense')} -> "
        f"{report.get('ppl_compressed')}  hidden_kl {report.get('hidden_kl')}  "
        f"wall_s {report['wall_s']}")


if __name__ == "__main__":
  cli.run(main)
