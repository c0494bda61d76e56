"""Entrypoint: python -m experiments.pipeline --config=configs/pipeline.py[:demo|:quick] --workdir=DIR."""

from absl import flags, logging
from ml_collections import config_flags

from experiments import cli
from penrose_jax.jobs import pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  pipeline.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)
