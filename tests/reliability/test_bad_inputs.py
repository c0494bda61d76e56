"""Bad inputs a user produces, for every entrypoint: one clear error, nothing half-written.

Each case calls a job's `run(config, workdir)` in-process (the config-flag cases run the absl
main in a subprocess) and checks: the error names the file / field / value, the job stops before
writing its outputs (no report.json, no finished model checkpoint, no temp files), or, where the
job can go on (a broken file inside a corpus), it does and reports the problem per file.
"""

from __future__ import annotations

import errno
import glob
import os
import pathlib
import shutil
import subprocess

import gguf
import ml_collections
import pytest

from configs import align as align_config
from configs import compress as compress_config
from configs import evaluate as evaluate_config
from configs import generate as generate_config
from configs import pipeline as pipeline_config
from configs import qa_tune as qa_tune_config
from penrose_jax.data import demo_corpus
from penrose_jax.io import CheckpointFormatError
from penrose_jax.jobs import align, compress, evaluate, generate, pipeline, qa_tune
from penrose_jax.reporting import report_json
from tests.reliability.conftest import REPO, entrypoint_command, subprocess_env
from tests.test_io_gguf import write_tiny_gguf

JOBS = ("compress", "align", "qa_tune", "evaluate", "generate", "pipeline")
BAD_UTF8 = b"Good text, then a Latin-1 byte: caf\xe9 and \xff\xfe garbage.\n"


def _no_outputs(workdir: pathlib.Path) -> None:
  """Nothing a later step could mistake for a result: no report, no finished model, no temp."""
  assert not (workdir / "report.json").exists()
  assert not glob.glob(str(workdir / "**" / "model.json"), recursive=True) or all(
      "model_cache" in p for p in glob.glob(str(workdir / "**" / "model.json"), recursive=True))
  assert not glob.glob(str(workdir / "**" / "*.tmp"), recursive=True)


def _config(job: str, model: str) -> ml_collections.ConfigDict:
  """The quick config of `job` with its model input replaced by `model`."""
  if job == "compress":
    config = compress_config.get_config("quick")
    config.model = model
  elif job == "align":
    config = align_config.get_config("quick")
    config.student, config.teacher = model, model
  elif job == "qa_tune":
    config = qa_tune_config.get_config("quick")
    config.model = model
  elif job == "evaluate":
    config = evaluate_config.get_config("quick")
    config.model = model
  elif job == "generate":
    config = generate_config.get_config("quick")
    config.model = model
  else:
    config = pipeline_config.get_config("quick")
    config.model = model
  return config


def _run(job: str, config: ml_collections.ConfigDict, workdir: pathlib.Path):
  runners = {"compress": compress.run, "align": align.run, "qa_tune": qa_tune.run,
             "evaluate": evaluate.run, "generate": generate.run, "pipeline": pipeline.run}
  return runners[job](config, workdir)


# ---- model files ----

def _text_gguf(tmp: pathlib.Path, tiny: pathlib.Path) -> tuple[pathlib.Path, str]:
  path = tmp / "notes.gguf"
  path.write_text("this is a text file someone renamed to .gguf\n")
  return path, r"notes\.gguf: (not a GGUF file|truncated or corrupt GGUF)"


def _truncated_gguf(tmp: pathlib.Path, tiny: pathlib.Path) -> tuple[pathlib.Path, str]:
  full = tmp / "full.gguf"
  write_tiny_gguf(full)
  cut = tmp / "cut.gguf"
  cut.write_bytes(full.read_bytes()[:full.stat().st_size * 2 // 3])
  return cut, r"cut\.gguf: truncated or corrupt GGUF"


def _unsupported_type_gguf(tmp: pathlib.Path, tiny: pathlib.Path) -> tuple[pathlib.Path, str]:
  import numpy as np
  path = tmp / "q8k.gguf"
  block_size, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_K]
  rows, cols = 64, 256
  data = np.zeros((rows, cols // block_size * type_size), np.uint8)
  write_tiny_gguf(path, raw={"blk.0.ffn_down.weight": (data, gguf.GGMLQuantizationType.Q8_K)},
                  ffn=cols)
  return path, r"q8k\.gguf: tensor blk\.0\.ffn_down\.weight has type Q8_K"


def _hf_without_config(tmp: pathlib.Path, tiny: pathlib.Path) -> tuple[pathlib.Path, str]:
  path = tmp / "hf_model"
  path.mkdir()
  (path / "model.safetensors").write_bytes(b"\0" * 16)
  (path / "tokenizer.json").write_text("{}")
  return path, r"hf_model.*no config\.json"


def _checkpoint_missing_part(tmp: pathlib.Path, tiny: pathlib.Path) -> tuple[pathlib.Path, str]:
  path = tmp / "ckpt"
  shutil.copytree(tiny, path)
  shutil.rmtree(path / "params" / "layers_1")
  return path, r"ckpt/params/layers_1: checkpoint directory not found"


def _missing_path(tmp: pathlib.Path, tiny: pathlib.Path) -> tuple[pathlib.Path, str]:
  return tmp / "no_such_model.gguf", r"no_such_model\.gguf: (no such file|GGUF file not found)"


MODEL_CASES = [_text_gguf, _truncated_gguf, _unsupported_type_gguf, _hf_without_config,
               _checkpoint_missing_part, _missing_path]


@pytest.mark.parametrize("job", JOBS)
@pytest.mark.parametrize("case", MODEL_CASES, ids=lambda f: f.__name__.strip("_"))
def test_bad_model_file_is_one_clear_error(tmp_path, tiny_model_dir, job, case):
  path, message = case(tmp_path, tiny_model_dir)
  workdir = tmp_path / "run"
  with pytest.raises((CheckpointFormatError, FileNotFoundError), match=message):
    _run(job, _config(job, str(path)), workdir)
  _no_outputs(workdir)


# ---- config flags (absl main, subprocess) ----

def test_override_of_wrong_type_exits_nonzero_naming_field_and_value(tmp_path):
  done = subprocess.run(entrypoint_command("compress", tmp_path / "w",
                                           overrides={"compression.param_ratio": "abc"}),
                        cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                        timeout=300)
  assert done.returncode != 0
  assert "param_ratio=abc" in done.stderr and "could not convert string to float" in done.stderr
  assert not (tmp_path / "w").exists()


def test_unknown_override_key_exits_nonzero_naming_key(tmp_path):
  done = subprocess.run(entrypoint_command("compress", tmp_path / "w", overrides={"bogus": 1}),
                        cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                        timeout=300)
  assert done.returncode != 0
  # ml_collections ends with `AttributeError: "'bogus'"` (a traceback, not absl's one-liner).
  assert "bogus" in done.stderr.strip().splitlines()[-1]
  assert not (tmp_path / "w").exists()


# ---- values out of range ----

RANGE_CASES = [("param_ratio", 0.0, r"param_ratio=0\.0 must be in \(0, 1\]"),
               ("param_ratio", 1.5, r"param_ratio=1\.5 must be in \(0, 1\]"),
               ("tau", -1.0, r"tau=-1\.0 must be >= 0"),
               ("keep_energy", 0.0, r"keep_energy=0\.0 must be in \(0, 1\]")]


@pytest.mark.parametrize("job", ["compress", "align", "pipeline"])
@pytest.mark.parametrize("field,value,message", RANGE_CASES,
                         ids=[f"{f}={v}" for f, v, _ in RANGE_CASES])
def test_out_of_range_compression_values_fail_before_any_work(tmp_path, tiny_model_dir, job,
                                                              field, value, message):
  config = _config(job, str(tiny_model_dir))
  section = {"compress": lambda c: c.compression, "align": lambda c: c.compress.compression,
             "pipeline": lambda c: c.compress.compression}[job](config)
  if field == "tau":
    section.spectral = "dct"
  section[field] = value
  if job == "align":
    config.student = ""  # compress first, then align
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=message):
    _run(job, config, workdir)
  _no_outputs(workdir)
  assert not (workdir / "dense").exists() and not (workdir / "compress" / "stream").exists()


# ---- corpora and text ----

def _bad_text_folder(tmp_path: pathlib.Path) -> pathlib.Path:
  folder = tmp_path / "texts"
  folder.mkdir()
  (folder / "a_good.txt").write_text("Perovskite oxides conduct oxygen ions. " * 200)
  (folder / "b_latin1.txt").write_bytes(BAD_UTF8 * 50)
  return folder


def test_empty_corpus_folder(tmp_path, tiny_model_dir):
  (tmp_path / "empty").mkdir()
  config = _config("qa_tune", str(tiny_model_dir))
  config.corpus = str(tmp_path / "empty")
  with pytest.raises(ValueError, match=r"no documents loaded from .*empty"):
    qa_tune.run(config, tmp_path / "run")
  _no_outputs(tmp_path / "run")


@pytest.mark.parametrize("job", ["compress", "evaluate", "align"])
def test_empty_text_folder_as_source(tmp_path, tiny_model_dir, job):
  (tmp_path / "empty").mkdir()
  config = _config(job, str(tiny_model_dir))
  if job == "compress":
    config.calibration.sources = [str(tmp_path / "empty")]
  elif job == "evaluate":
    config.text_sets = ml_collections.ConfigDict({"empty": str(tmp_path / "empty")})
  else:
    config.train_sources = [str(tmp_path / "empty")]
  with pytest.raises(FileNotFoundError, match=r"empty: no \.txt/\.md files found"):
    _run(job, config, tmp_path / "run")
  _no_outputs(tmp_path / "run")


@pytest.mark.parametrize("job", ["compress", "evaluate", "align"])
def test_non_utf8_text_names_the_file(tmp_path, tiny_model_dir, job):
  folder = _bad_text_folder(tmp_path)
  config = _config(job, str(tiny_model_dir))
  if job == "compress":
    config.calibration.sources = [str(folder)]
  elif job == "evaluate":
    config.text_sets = ml_collections.ConfigDict({"bad": str(folder)})
  else:
    config.train_sources = [str(folder)]
  with pytest.raises(ValueError, match=r"b_latin1\.txt: not valid UTF-8"):
    _run(job, config, tmp_path / "run")
  _no_outputs(tmp_path / "run")


def test_corpus_with_broken_files_and_an_overlong_section(tmp_path, tiny_model_dir):
  """qa_tune goes on past a non-UTF-8, an empty and an unparsable file (each reported by
  name), and trains on a section far longer than seq_len (split into windows)."""
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  good = sorted(pathlib.Path(demo_corpus.demo_corpus_dir()).glob("*.md"))[0]
  shutil.copy(good, corpus / good.name)
  (corpus / "latin1.md").write_bytes(b"# Title\n\n## Section\n\n" + BAD_UTF8)
  (corpus / "empty.md").write_text("  \n")
  (corpus / "broken.xml").write_text("<article><body><sec><title>unclosed")
  sentence = "The dense ceramic electrolyte limits the ionic current at low temperature. "
  (corpus / "long.md").write_text("# Long document\n\n## Only section\n\n" + sentence * 400)
  config = _config("qa_tune", str(tiny_model_dir))
  config.corpus = str(corpus)
  config.max_documents = 0
  config.qa_sources = "rule"
  config.curated_path = ""
  config.steps_per_section = 1
  config.general_replay_fraction = 0.0
  config.eval.enabled = False
  config.save_model = False
  config.trace_questions = 0
  report = qa_tune.run(config, tmp_path / "run")
  skipped = "\n".join(report["skipped"])
  assert "latin1.md: not valid UTF-8 (byte 0xe9" in skipped
  assert "empty.md: empty file" in skipped
  assert "broken.xml:" in skipped
  assert report["documents"] == 2 and report["train_steps"] == report["sections"]
  assert report["final_train_loss"] is not None


# ---- unwritable workdir, full disk ----

def _evaluate_config(tiny_model_dir: pathlib.Path) -> ml_collections.ConfigDict:
  config = _config("evaluate", str(tiny_model_dir))
  config.text_sets = ml_collections.ConfigDict({"demo": "package:demo_corpus"})
  config.max_windows = 2
  config.benchmarks = ""
  return config


@pytest.mark.parametrize("job", ["evaluate", "generate", "compress"])
def test_unwritable_workdir_names_the_path(tmp_path, tiny_model_dir, monkeypatch, job):
  workdir = tmp_path / "readonly"
  workdir.mkdir()
  os.chmod(workdir, 0o500)
  try:
    if os.access(workdir, os.W_OK):  # root ignores the mode bits: simulate the refusal
      real_mkstemp, real_mkdir = report_json.tempfile.mkstemp, pathlib.Path.mkdir

      def refuse_mkstemp(*args, dir=None, **kwargs):
        if str(dir).startswith(str(workdir)):
          raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

      def refuse_mkdir(self, *args, **kwargs):
        if str(self).startswith(str(workdir) + os.sep):
          raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

      monkeypatch.setattr(report_json.tempfile, "mkstemp", refuse_mkstemp)
      monkeypatch.setattr(pathlib.Path, "mkdir", refuse_mkdir)
    config = _evaluate_config(tiny_model_dir) if job == "evaluate" else _config(
        job, str(tiny_model_dir))
    with pytest.raises(PermissionError, match=str(workdir)):
      _run(job, config, workdir)
  finally:
    os.chmod(workdir, 0o700)
  assert sorted(os.listdir(workdir)) == []


def test_disk_full_during_report_write_keeps_previous_report(tmp_path, tiny_model_dir,
                                                             monkeypatch):
  config = _evaluate_config(tiny_model_dir)
  evaluate.run(config, tmp_path)
  before = (tmp_path / "report.json").read_bytes()

  def no_space(fd):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(os, "fsync", no_space)
  with pytest.raises(OSError, match=r"No space left on device") as info:
    evaluate.run(config, tmp_path)
  assert info.value.errno == errno.ENOSPC
  assert "report.json" in str(info.value)
  assert (tmp_path / "report.json").read_bytes() == before
  assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []
