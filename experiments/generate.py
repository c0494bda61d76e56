"""Entrypoint: python -m experiments.generate --config=configs/generate.py --prompt="..." [--workdir=DIR]."""

from absl import flags, logging
from ml_collections import config_flags

from experiments import cli
from penrose_jax.jobs import generate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Optional output folder for report.json.")
_PROMPT = flags.DEFINE_string("prompt", None, "Prompt text (overrides config.prompt).")
flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  config = _CONFIG.value
  if _PROMPT.value is not None:
    config.prompt = _PROMPT.value
  report = generate.run(config, _WORKDIR.value)
  if "completion" in report:
    print(report["completion"])
  else:
    print(f"{report['prompts']} answers in {report['generations']}")


if __name__ == "__main__":
  cli.run(main)
