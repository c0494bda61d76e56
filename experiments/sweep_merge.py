"""Entrypoint: merge sweep tables and redraw plots without rerunning (jobs/sweep_merge.py).

python -m experiments.sweep_merge --config=configs/sweep_bytes.py --workdir=results/sweep_bytes \
    --merge=results/sweep_bytes/gptq/results.csv --source_model=default --num_layers=30
"""

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli
from penrose_jax.jobs import sweep_merge

_CONFIG = config_flags.DEFINE_config_file("config", None,
                                          "Path to a configs/sweep_*.py file[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Results folder holding results.csv.")
_MERGE = flags.DEFINE_list("merge", [], "Further results.csv files whose new runs are added.")
_SOURCE = flags.DEFINE_string("source_model", "", "Model whose GGUF bytes fill source_bytes.")
_LAYERS = flags.DEFINE_integer("num_layers", 0, "Layers of that model (with --source_model).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  out = sweep_merge.run(_CONFIG.value, _WORKDIR.value, _MERGE.value, _SOURCE.value,
                        _LAYERS.value)
  print(f"runs {out['runs']}\nadded {out['added']}\nduplicates {out['duplicates']}\n"
        f"source_bytes {out['source_bytes']}\nplots {out['plots']}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
