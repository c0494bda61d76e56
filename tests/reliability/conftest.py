"""Shared pieces of the reliability suite: reference runs, report normalisation, subprocesses.

The reference runs (compress quick, align quick on that compressed model, a shrunk qa_tune
quick) are session fixtures, run once in-process; the determinism tests run them a second time
and the fault-injection tests compare their killed-and-resumed subprocess runs against them.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any, Optional

import numpy as np
import pytest

from configs import align as align_config
from configs import compress as compress_config
from configs import qa_tune as qa_tune_config
from penrose_jax import io as pio

REPO = pathlib.Path(__file__).resolve().parents[2]
# Report keys that measure the machine, not the computation.
TIMING_KEYS = {"wall_s", "tokens_per_s", "tokens_per_s_steady", "peak_rss_mib",
               "qa_generation_s", "train_wall_s", "train_s", "elapsed_s", "wall_time",
               "generate_s", "peak_memory_mib", "timing", "stage_s",
               "peak_rss_mib_after_layer"}


def without_timing(value: Any, workdir: Optional[pathlib.Path] = None) -> Any:
  """Drops timing / memory fields (recursively) and replaces the workdir in strings by '<W>'."""
  if isinstance(value, dict):
    return {k: without_timing(v, workdir) for k, v in value.items() if k not in TIMING_KEYS}
  if isinstance(value, list):
    return [without_timing(v, workdir) for v in value]
  if isinstance(value, str) and workdir is not None:
    return value.replace(str(workdir), "<W>")
  return value


def checkpoint_arrays(model_dir: pathlib.Path) -> dict[str, np.ndarray]:
  """Every array of a model checkpoint folder (all params parts), keyed by path."""
  out = {}
  for part in sorted((model_dir / "params").iterdir()):
    params, _ = pio.restore_params(part)
    for path, leaf in _flatten(params):
      out[path] = leaf
  return out


def _flatten(tree: Any, prefix: str = ""):
  if isinstance(tree, dict):
    for k in sorted(tree):
      yield from _flatten(tree[k], f"{prefix}/{k}" if prefix else str(k))
  elif hasattr(tree, "checkpoint_arrays"):
    for k, v in sorted(tree.checkpoint_arrays().items()):
      yield f"{prefix}:{k}", np.asarray(v)
  else:
    yield prefix, np.asarray(tree)


def assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
  """Bit-identical arrays under the same keys."""
  assert sorted(a) == sorted(b)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ---- configs shared by the determinism and fault-injection tests ----

# The two-pass streaming job (pass-1 spectra, ranks.json, then layers): the most state to kill
# and resume. The default per-matrix single SVD runs pass 2 only. Command-line runs of the
# same configuration pass these as --config overrides.
COMPRESS_TWO_PASS = {"compression.tiling": "penrose", "compression.budget_scope": "global",
                     "compression.param_ratio": 0.6}


def compress_quick() -> Any:
  config = compress_config.get_config("quick")
  for key, value in COMPRESS_TWO_PASS.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


def align_overrides(student: str) -> dict:
  """align quick on a finished compress run: its model as the student, the tiny model that
  run built as the teacher (no second build), fewer eval windows (CI time)."""
  teacher = pathlib.Path(student).parent / "model_cache" / "tiny"
  return {"student": student, "teacher": str(teacher), "eval.max_windows": 2}


def align_quick(student: str) -> Any:
  overrides = align_overrides(student)
  config = align_config.get_config("quick")
  config.student, config.teacher = overrides["student"], overrides["teacher"]
  config.eval.max_windows = overrides["eval.max_windows"]
  return config


# qa_tune quick, shrunk for CI time: one document (4 sections), one benchmark.
QA_OVERRIDES = {"max_documents": 1, "eval.benchmarks": "copa", "eval.max_items": 4}


def qa_tune_quick() -> Any:
  config = qa_tune_config.get_config("quick")
  config.max_documents = QA_OVERRIDES["max_documents"]
  config.eval.benchmarks = QA_OVERRIDES["eval.benchmarks"]
  config.eval.max_items = QA_OVERRIDES["eval.max_items"]
  return config


@pytest.fixture(scope="session")
def compress_reference(tmp_path_factory):
  """(workdir, report) of an uninterrupted in-process compress quick run."""
  from penrose_jax.jobs import compress
  workdir = tmp_path_factory.mktemp("compress_ref")
  return workdir, compress.run(compress_quick(), workdir)


@pytest.fixture(scope="session")
def align_reference(tmp_path_factory, compress_reference):
  """(workdir, report, student) of an uninterrupted in-process align quick run."""
  from penrose_jax.jobs import align
  student = str(compress_reference[0] / "model")
  workdir = tmp_path_factory.mktemp("align_ref")
  return workdir, align.run(align_quick(student), workdir), student


@pytest.fixture(scope="session")
def qa_tune_reference(tmp_path_factory):
  """(workdir, report) of an uninterrupted in-process (shrunk) qa_tune quick run."""
  from penrose_jax.jobs import qa_tune
  workdir = tmp_path_factory.mktemp("qa_ref")
  return workdir, qa_tune.run(qa_tune_quick(), workdir)


# ---- subprocesses of the entrypoints ----

def entrypoint_command(job: str, workdir: pathlib.Path, variant: str = "quick",
                       overrides: Optional[dict] = None) -> list[str]:
  """`python -m experiments.<job> --config=configs/<job>.py:<variant> --workdir=DIR ...`."""
  cmd = [sys.executable, "-m", f"experiments.{job}", f"--config=configs/{job}.py:{variant}",
         f"--workdir={workdir}"]
  cmd += [f"--config.{k}={v}" for k, v in (overrides or {}).items()]
  return cmd


def subprocess_env() -> dict[str, str]:
  env = dict(os.environ)
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  env.setdefault("JAX_PLATFORMS", "cpu")
  return env


def _wrote_since(workdir: pathlib.Path, since: float) -> bool:
  """Whether any file under `workdir` was modified after `since` (epoch seconds)."""
  for root, _, files in os.walk(workdir):
    for name in files:
      try:
        if os.stat(os.path.join(root, name)).st_mtime > since:
          return True
      except FileNotFoundError:  # a temp file renamed away meanwhile
        continue
  return False


def run_and_kill(cmd: list[str], workdir: pathlib.Path, delay_s: float,
                 timeout_s: float = 900.0) -> str:
  """Starts `cmd`, waits until it writes its first file under `workdir` (imports and startup
  are over), sleeps `delay_s`, then SIGKILLs it. Only the process started here is killed.

  Returns:
    'killed' when the kill landed, or 'finished' when the job ended on its own first.
  """
  since = time.time() - 0.01
  proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
  try:
    deadline = time.time() + timeout_s
    while proc.poll() is None and not _wrote_since(workdir, since):
      if time.time() > deadline:
        raise AssertionError(f"{cmd} wrote nothing under {workdir} within {timeout_s} s")
      time.sleep(0.1)
    end = time.time() + delay_s
    while time.time() < end and proc.poll() is None:
      time.sleep(0.02)
    if proc.poll() is None:
      os.kill(proc.pid, signal.SIGKILL)
      proc.wait()
      return "killed"
    stderr = proc.stderr.read().decode(errors="replace")
    assert proc.returncode == 0, f"{cmd} failed (rc {proc.returncode}):\n{stderr[-3000:]}"
    return "finished"
  finally:
    if proc.poll() is None:
      os.kill(proc.pid, signal.SIGKILL)
      proc.wait()
    proc.stderr.close()


# Generous limits: a loaded 2-core machine took > 300 s for one align quick run.
def run_to_end(cmd: list[str], timeout_s: float = 900.0) -> subprocess.CompletedProcess:
  """Runs `cmd` to completion and asserts it succeeded."""
  done = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                        timeout=timeout_s)
  assert done.returncode == 0, f"{cmd} failed (rc {done.returncode}):\n{done.stderr[-3000:]}"
  return done
