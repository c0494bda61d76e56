"""A job's workdir belongs to one config, one set of inputs and one process.

Every job enters `claim(job, config, workdir)` before any work (align, compress, evaluate and
qa_tune through the `claims_workdir(job)` decorator on their `run`). It

1. checks the workdir can hold results: not a file, writable (a probe file), so a run never
   computes for minutes and then fails to write;
2. takes an advisory lock, `fcntl.flock` on DIR/.lock with the holder's pid written inside: a
   second process on the same workdir stops at once naming that pid (two qa_tune processes on
   one workdir had duplicated Q&A pairs and traces);
3. records the resolved config and a fingerprint of every input file the config names
   (DIR/run_config.json); a rerun whose config or inputs differ from the record, on a workdir
   that holds outputs, stops with one line naming the changed keys / files. A rerun had resumed
   the old run's checkpoints and written a report of the new config over them (a changed
   learning rate or mode; an edited corpus document kept its old Q&A pairs).
   `--config.overwrite=True` moves the old run aside (DIR.previous_config_<time>, as the
   pipeline does with a finished stage) and starts afresh. The same config resumes as before.

Inputs are found by value: every config string (comma lists and '@split' suffixes split off)
that resolves (`data.paths.resolve_data_path`) to an existing file or folder, and 'default'
for a model key. Files up to 4 MiB are hashed whole; larger ones by size and three 1 MiB
samples (head, middle, tail), so a 270 MB GGUF costs milliseconds; an edit inside a large file
that keeps its size and misses the samples goes unnoticed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import os
import pathlib
import tempfile
import time
from typing import Any, Callable, Iterator

from penrose_jax.data import paths
from penrose_jax.jobs import config_checks
from penrose_jax.reporting import report_json

LOCK_NAME = ".lock"
RECORD_NAME = "run_config.json"
# Config keys that never change a job's results (last dotted part): they are not recorded.
RESULT_NEUTRAL_KEYS = frozenset({"overwrite", "time_budget_s", "results_dir"})
# Entries a workdir may hold before it holds any result (a record there binds nothing).
NOT_RESULTS = frozenset({LOCK_NAME, RECORD_NAME, "model_cache"})
MODEL_KEYS = frozenset({"model", "student", "teacher"})
_WHOLE_FILE_BYTES = 4 << 20
_SAMPLE_BYTES = 1 << 20
_MAX_FILES = 20000


class WorkdirError(ValueError):
  """An expected problem with a job's workdir; the message is one line naming the folder."""


class WorkdirLockedError(WorkdirError):
  """Another process holds the workdir's lock."""


class WorkdirChangedError(WorkdirError):
  """The workdir holds a run of another config or other inputs."""


def file_digest(path: pathlib.Path) -> str:
  """A cheap content hash of one file (whole up to 4 MiB, else size + three samples).

  Args:
    path: the file.

  Returns:
    Hex digest.
  """
  size = path.stat().st_size
  digest = hashlib.blake2b(str(size).encode(), digest_size=16)
  with open(path, "rb") as handle:
    if size <= _WHOLE_FILE_BYTES:
      digest.update(handle.read())
    else:
      for offset in (0, size // 2, size - _SAMPLE_BYTES):
        handle.seek(offset)
        digest.update(handle.read(_SAMPLE_BYTES))
  return digest.hexdigest()


def input_fingerprint(path: pathlib.Path) -> dict[str, str]:
  """Digest per file of an input: {'': digest} for a file, {relative path: digest} for a folder
  (hidden entries and model_cache folders skipped).

  Args:
    path: an existing file or folder.

  Returns:
    The digests.
  """
  if path.is_file():
    return {"": file_digest(path)}
  out: dict[str, str] = {}
  for root, dirs, files in os.walk(path):
    dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "model_cache")
    for name in sorted(files):
      if name.startswith(".") or name.endswith(".tmp"):
        continue
      if len(out) >= _MAX_FILES:  # a data folder this large: count and sizes only
        return {"": f"{len(out)} files+"}
      file = pathlib.Path(root, name)
      try:
        out[str(file.relative_to(path))] = file_digest(file)
      except OSError:  # a file vanishing mid-walk reads as a change on the next run
        out[str(file.relative_to(path))] = "unreadable"
  return out


def flat_config(config: Any) -> dict[str, Any]:
  """The config as {dotted key: JSON value}, result-neutral keys left out.

  Args:
    config: a ConfigDict or mapping.

  Returns:
    The flat dict.
  """
  tree = json.loads(json.dumps(report_json.build_report("", config, "", 0, {})["config"]))
  out: dict[str, Any] = {}

  def walk(node: Any, prefix: str) -> None:
    if isinstance(node, dict) and node:
      for key, value in node.items():
        walk(value, f"{prefix}.{key}" if prefix else str(key))
    elif prefix.rsplit(".", 1)[-1] not in RESULT_NEUTRAL_KEYS:
      out[prefix] = node
  walk(tree, "")
  return out


def _path_candidates(key: str, value: Any) -> Iterator[str]:
  values = value if isinstance(value, list) else [value]
  for item in values:
    if not isinstance(item, str) or not item.strip():
      continue
    for part in item.split(","):
      part = part.strip()
      if part:
        yield part.rsplit("@", 1)[0] if "@" in part and not part.startswith("@") else part


def input_fingerprints(flat: dict[str, Any]) -> dict[str, dict[str, str]]:
  """Fingerprints of the existing files / folders a flat config names.

  Args:
    flat: `flat_config` output.

  Returns:
    {'<key>: <the config text naming it>': input_fingerprint}.
  """
  out = {}
  for key, value in sorted(flat.items()):
    for text in _path_candidates(key, value):
      try:
        if text == "default" and key.rsplit(".", 1)[-1] in MODEL_KEYS:
          from penrose_jax import io as pio  # the default GGUF inside the installed wheel
          path = pio.find_default_gguf()
        else:
          path = paths.resolve_data_path(text)
        if path.exists():  # keyed by the config's text: a moved clone is the same input
          out[f"{key}: {text}"] = input_fingerprint(path)
      except (ValueError, OSError):  # not a path (or unreadable): the job reports it itself
        continue
  return out


def _describe(value: Any) -> str:
  text = json.dumps(value)
  return text if len(text) <= 40 else text[:37] + "..."


def differences(stored: dict[str, Any], config: dict[str, Any],
                inputs: dict[str, dict[str, str]]) -> list[str]:
  """What differs between a workdir record and this run, one short phrase each.

  Args:
    stored: the record ({'config': flat, 'inputs': fingerprints}; inputs may be absent).
    config: this run's flat config.
    inputs: this run's input fingerprints.

  Returns:
    Phrases such as 'learning_rate 0.001 -> 0.05' or 'corpus: a.md edited'; [] = same run.
  """
  out = []
  old_config = stored.get("config", {})
  for key in sorted(config):
    if key not in old_config and config[key] in ("", 0, False, None, [], {}):
      continue  # a field added to the configs since, off by default: the run is still this
    if old_config.get(key, "<unset>") != config[key]:
      out.append(f"{key} {_describe(old_config.get(key, '<unset>'))} -> "
                 f"{_describe(config.get(key, '<unset>'))}")
  old_inputs = stored.get("inputs")
  if old_inputs is None:  # a workdir written before inputs were recorded
    return out
  for name in sorted(set(old_inputs) & set(inputs)):
    old, new = old_inputs[name], inputs[name]
    if old == new:
      continue
    files = sorted(f for f in set(old) | set(new) if old.get(f) != new.get(f))
    how = lambda f: "edited" if f in old and f in new else "added" if f in new else "removed"
    what = ", ".join(f"{f or pathlib.Path(name.split(': ', 1)[1]).name} {how(f)}"
                     for f in files[:3])
    out.append(f"input {name}: {what}{' ...' if len(files) > 3 else ''}")
  for name in sorted(set(old_inputs) ^ set(inputs)):
    out.append(f"input {name} {'appeared' if name in inputs else 'is gone'}")
  return out


def check_writable(workdir: pathlib.Path) -> None:
  """Creates the workdir and proves a file can be written there.

  Args:
    workdir: the folder.

  Raises:
    WorkdirError: the path is a file.
    PermissionError / OSError: naming the folder (read-only, no space, ...).
  """
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError(f"{workdir}: the workdir is a file, not a folder; pass a folder "
                       "(it is created) as --workdir")
  workdir.mkdir(parents=True, exist_ok=True)
  try:
    handle, probe = tempfile.mkstemp(dir=workdir, prefix=".write_probe", suffix=".tmp")
  except OSError as err:
    raise type(err)(err.errno or errno.EACCES,
                    f"the workdir is not writable ({err.strerror or err})", str(workdir)) from None
  os.close(handle)
  os.unlink(probe)


@contextlib.contextmanager
def locked(workdir: pathlib.Path) -> Iterator[None]:
  """Holds the workdir's advisory lock (DIR/.lock, this pid inside) for the block.

  Args:
    workdir: an existing folder.

  Raises:
    WorkdirLockedError: another process (named by pid) holds it.
  """
  handle = open(workdir / LOCK_NAME, "a+")
  try:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      handle.seek(0)
      holder = handle.read().strip() or "unknown"
      raise WorkdirLockedError(
          f"{workdir}: the workdir is in use by process {holder} (lock {workdir / LOCK_NAME}); "
          "wait for it to finish or pick another --workdir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    yield
  finally:
    handle.close()  # closing releases the flock


def holds_results(workdir: pathlib.Path) -> bool:
  """Whether `workdir` holds anything but its lock, record, model cache and temp files."""
  return workdir.is_dir() and any(name not in NOT_RESULTS and not name.endswith(".tmp")
                                  for name in os.listdir(workdir))


def _aside_path(workdir: pathlib.Path) -> pathlib.Path:
  stamp = int(time.time())
  aside = workdir.with_name(f"{workdir.name}.previous_config_{stamp}")
  while aside.exists():
    stamp += 1
    aside = workdir.with_name(f"{workdir.name}.previous_config_{stamp}")
  return aside


def move_aside(workdir: pathlib.Path) -> pathlib.Path:
  """Moves every entry of `workdir` but its lock into a new sibling DIR.previous_config_<time>.

  Args:
    workdir: the folder (its lock stays, so the holder keeps it).

  Returns:
    The folder the old run is in now.
  """
  aside = _aside_path(workdir)
  aside.mkdir()
  for name in os.listdir(workdir):
    if name != LOCK_NAME:
      os.rename(workdir / name, aside / name)
  return aside


def move_run_aside(directory: pathlib.Path, label: str) -> pathlib.Path:
  """Renames a stage's / sweep point's whole folder to DIR.previous_config_<time> (the pipeline
  and the sweep do this when its config or inputs changed, so the job starts afresh).

  Args:
    directory: the folder (no process may hold it).
    label: the stage name for the message.

  Returns:
    The folder's new path.
  """
  aside = _aside_path(directory)
  directory.rename(aside)
  print(f"[{label}] config or inputs changed: moved the earlier run to {aside}", flush=True)
  return aside


def _stored_record(workdir: pathlib.Path) -> dict[str, Any] | None:
  """The workdir's record; for a run from before records were written, its report's config."""
  record_path = workdir / RECORD_NAME
  try:
    if record_path.exists():
      return json.loads(record_path.read_text())
    if (workdir / "report.json").exists():
      return {"config": flat_config(json.loads((workdir / "report.json").read_text())
                                    .get("config", {}))}
  except (OSError, ValueError):
    return {"config": {"<record>": "unreadable"}}
  return None


def changes(config: Any, workdir: pathlib.Path) -> list[str]:
  """What differs between the run recorded in `workdir` and `config` with its inputs now.

  Args:
    config: a job config.
    workdir: a job's workdir (it may not exist).

  Returns:
    `differences` phrases; [] when nothing is recorded or nothing differs.
  """
  stored = _stored_record(workdir) if workdir.is_dir() else None
  if not stored:
    return []
  flat = flat_config(config)
  return differences(stored, flat, input_fingerprints(flat))


def check_same_run(job: str, config: Any, workdir: pathlib.Path) -> None:
  """Compares the workdir's record with this config and inputs; records them when new.

  Args:
    job: the job name (for messages).
    config: the resolved config (`overwrite` read from it).
    workdir: the locked folder.

  Raises:
    WorkdirChangedError: another config / other inputs, outputs present, no overwrite.
  """
  flat = flat_config(config)
  record = {"job": job, "config": flat, "inputs": input_fingerprints(flat)}
  record_path = workdir / RECORD_NAME
  stored = _stored_record(workdir)
  changed = differences(stored, flat, record["inputs"]) if stored else []
  if changed and holds_results(workdir):
    if config.get("overwrite", False):
      aside = move_aside(workdir)
      print(f"[{job}] config or inputs changed: moved the old run to {aside}", flush=True)
    else:
      raise WorkdirChangedError(
          f"{workdir}: holds an earlier {job} run of another config or inputs (changed: "
          f"{'; '.join(changed[:6])}{'; ...' if len(changed) > 6 else ''}); rerun with "
          "--config.overwrite=True to move that run aside and start afresh, or pick another "
          "--workdir")
  if changed or not record_path.exists():
    report_json.write_json_atomic(record_path, record)


@contextlib.contextmanager
def claim(job: str, config: Any, workdir: str | pathlib.Path, record: bool = True
          ) -> Iterator[pathlib.Path]:
  """Checks the config's values, then makes `workdir` this process's, for this config.

  Args:
    job: the job name (for messages).
    config: the resolved job config.
    workdir: the job's output folder.
    record: compare with / write the config record (False for the pipeline and the sweep,
      which keep one run per stage / sweep point in subfolders and guard those).

  Yields:
    The workdir as a Path.

  Raises:
    ValueError (config_checks), WorkdirError, PermissionError / OSError: see the module doc.
  """
  config_checks.check_values(config)
  workdir = pathlib.Path(workdir)
  check_writable(workdir)
  with locked(workdir):
    if record:
      check_same_run(job, config, workdir)
    yield workdir


def claims_workdir(job: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
  """Decorates a job's `run(config, workdir, ...)` so its body runs inside `claim`.

  Args:
    job: the job name (for messages).

  Returns:
    A decorator; the decorated function checks the config, owns the workdir and records the
    run (`claim`) before its body, and releases the lock after it, whatever happens.
  """
  def decorate(body: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(body)
    def run(config: Any, workdir: str | pathlib.Path, *args: Any, **kwargs: Any) -> Any:
      with claim(job, config, workdir):
        return body(config, workdir, *args, **kwargs)
    return run
  return decorate
