"""Determinism: the same config and seed give bit-identical outputs, run twice in one process.

Timing, throughput and memory fields are dropped before comparing (conftest.TIMING_KEYS), and
the workdir path is normalised. What is *not* promised across machines is in the README
("Reliability"): XLA CPU vs GPU reductions, thread counts, BLAS builds.
"""

from __future__ import annotations

import json

from penrose_jax.jobs import align, compress
from penrose_jax.training import read_metrics
from tests.reliability.conftest import (align_quick, assert_same_arrays, checkpoint_arrays,
                                        compress_quick, without_timing)


def _same_reports(a: dict, a_dir, b: dict, b_dir) -> None:
  a = without_timing(json.loads(json.dumps(a)), a_dir)
  b = without_timing(json.loads(json.dumps(b)), b_dir)
  assert a == b


def test_compress_quick_twice_is_bit_identical(tmp_path, compress_reference):
  ref_dir, ref_report = compress_reference
  report = compress.run(compress_quick(), tmp_path)
  _same_reports(report, tmp_path, ref_report, ref_dir)
  assert_same_arrays(checkpoint_arrays(tmp_path / "model"), checkpoint_arrays(ref_dir / "model"))
  assert (tmp_path / "stream" / "ranks.json").read_text() == (
      ref_dir / "stream" / "ranks.json").read_text()


def test_align_quick_twice_is_bit_identical(tmp_path, align_reference):
  ref_dir, ref_report, student = align_reference
  report = align.run(align_quick(student), tmp_path)
  _same_reports(report, tmp_path, ref_report, ref_dir)
  assert (read_metrics(str(tmp_path / "train" / "metrics.jsonl"), drop_timing=True)
          == read_metrics(str(ref_dir / "train" / "metrics.jsonl"), drop_timing=True))
  assert_same_arrays(checkpoint_arrays(tmp_path / "model"), checkpoint_arrays(ref_dir / "model"))
