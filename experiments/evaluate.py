"""Entrypoint: python -m experiments.evaluate --config=configs/evaluate.py[:quick] --workdir=DIR."""

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli
from penrose_jax.jobs import evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  report = evaluate.run(_CONFIG.value, _WORKDIR.value)
  print(f"ppl: {report['ppl']}  accuracy: {report['accuracy']}  wall_s: {report['wall_s']}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
