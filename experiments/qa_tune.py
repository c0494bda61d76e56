"""Entrypoint: python -m experiments.qa_tune --config=configs/qa_tune.py[:quick] --workdir=DIR."""

from absl import flags, logging
from ml_collections import config_flags

from experiments import cli
from penrose_jax.jobs import qa_tune

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint save at INFO
  report = qa_tune.run(_CONFIG.value, _WORKDIR.value)
  keys = ("mode", "heldout_ll_accuracy_before", "heldout_ll_accuracy_after", "heldout_em_before",
          "heldout_em_after", "heldout_f1_before", "heldout_f1_after", "general_accuracy_before",
          "general_accuracy_after", "train_tokens", "tokens_per_s", "qa_pairs_by_source",
          "filter_rejection_rate", "exam_accuracy_sum_before", "exam_accuracy_sum_after",
          "exam_accuracy_mean_before", "exam_accuracy_mean_after", "exam_em_before",
          "exam_em_after", "wall_s")
  for key in keys:
    if key in report or not key.startswith("exam_"):  # exam keys only when an exam was set
      print(f"{key}: {report.get(key)}")


if __name__ == "__main__":
  cli.run(main)
