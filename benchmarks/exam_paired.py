"""Paired significance of exam differences between qa_tune runs (exact McNemar test).

Command (from the repo root), e.g. on the injection sweep's runs:
  python benchmarks/exam_paired.py --out=results/sweep_injection/paired_tests.md \
      workdirs/sweep_injection_full/runs/sectionwise workdirs/sweep_injection_full/runs/onepass \
      workdirs/sweep_injection_full/runs/onepass_augmented

Reads DIR/exam_answers.json of every run ('after' multiple-choice answers; the questions must be
the same, in the same order) and, for every pair of runs and for accuracy by summed and by mean
log-likelihood, counts the questions only one of the two gets right and gives the exact two-sided
p-value (penrose_jax.evaluation.paired.mcnemar). Prints a markdown table; --out writes it too.
Takes a second.
"""

from __future__ import annotations

import argparse
import itertools
import json
import pathlib
import sys

from penrose_jax.evaluation.paired import mcnemar
from penrose_jax.reporting import report_json


def _choice_answers(run: pathlib.Path) -> list[dict]:
  path = run / "exam_answers.json"
  if not path.is_file():
    raise SystemExit(f"{path}: not found (a qa_tune run with exam_path writes it)")
  answers = json.loads(path.read_text())["after"]["choice"]
  if not answers:
    raise SystemExit(f"{path}: no multiple-choice answers after training")
  return answers


def paired_table(runs: list[pathlib.Path]) -> str:
  """Markdown table of every run pair's McNemar test (summed and mean log-likelihood).

  Args:
    runs: qa_tune run folders scored on the same exam.

  Returns:
    The table text.
  """
  answers = {run: _choice_answers(run) for run in runs}
  lines = ["| run A | run B | scoring | acc. A | acc. B | right in A only | right in B only "
           "| exact McNemar p |", "|---|---|---|---|---|---|---|---|"]
  for a, b in itertools.combinations(runs, 2):
    if [q["question"] for q in answers[a]] != [q["question"] for q in answers[b]]:
      raise SystemExit(f"{a} and {b} were scored on different exam questions")
    for key, label in (("correct_sum", "summed LL"), ("correct_mean", "mean LL")):
      test = mcnemar([q[key] for q in answers[a]], [q[key] for q in answers[b]])
      lines.append(f"| {a.name} | {b.name} | {label} | {test['accuracy_a']:.3f} | "
                   f"{test['accuracy_b']:.3f} | {test['a_only']} | {test['b_only']} | "
                   f"{test['p_value']:.3f} |")
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", nargs="+", type=pathlib.Path, help="qa_tune run folders")
  parser.add_argument("--out", type=pathlib.Path, default=None, help="also write the table here")
  args = parser.parse_args(argv)
  if len(args.runs) < 2:
    raise SystemExit("give at least two run folders")
  table = paired_table(args.runs)
  print(table, end="")
  if args.out is not None:
    report_json.write_text_atomic(args.out, table)


if __name__ == "__main__":
  main(sys.argv[1:])
