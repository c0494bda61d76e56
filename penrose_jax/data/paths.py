"""Where a config's data paths point: packaged data names and the team's shared-data folder.

A data path in a config is one of:
  - a filesystem path, relative to the working directory (the repo root for the documented
    commands);
  - a path under `../shared/` (the team's data folder beside the clone). When the environment
    variable PENROSE_SHARED_DIR is set, such a path resolves inside that folder instead: a pod
    or a notebook can keep the data elsewhere, and `make test` sets it to a missing folder to
    run the data-dependent tests as a clone without ../shared runs them;
  - 'package:NAME', data shipped inside the package (see PACKAGED).
Nothing here checks that a path exists: the jobs decide whether a missing path is skipped (and
listed in report.json) or fatal.
"""

from __future__ import annotations

import importlib.resources
import os
import pathlib

SHARED_PREFIX = "../shared"
SHARED_DIR_ENV = "PENROSE_SHARED_DIR"
# The demo corpus, the general text and the injection benchmark ship as package data of this
# package (penrose_jax/data/*, setup.py package_data).
PACKAGE_DATA_OWNER = "penrose_jax.data"
PACKAGED = {"demo_corpus": "corpus",
            "curated_qa": "corpus/curated_qa.jsonl",
            "heldout_questions": "corpus/heldout_questions.jsonl",
            # General-English prose written for this package (everyday science, geography,
            # history, cooking): perplexity on text unrelated to the materials corpus.
            "general_text": "general_corpus",
            # The knowledge-injection benchmark (data/injection_benchmark.py).
            "injection_corpus": "injection",
            "injection_exam": "injection/exam_choice.jsonl",
            "injection_open_exam": "injection/exam_open.jsonl"}


def shared_dir() -> pathlib.Path:
  """The folder `../shared/...` config paths point into.

  Returns:
    $PENROSE_SHARED_DIR when set (it may not exist), else `../shared` (relative to the working
    directory, as the config paths are).
  """
  override = os.environ.get(SHARED_DIR_ENV, "")
  return pathlib.Path(override).expanduser() if override else pathlib.Path(SHARED_PREFIX)


def packaged_path(name: str) -> pathlib.Path:
  """The path of data shipped inside the package.

  Args:
    name: a key of PACKAGED (e.g. 'demo_corpus', 'heldout_questions', 'injection_corpus').

  Returns:
    The path (a real file or folder for regular and editable installs).

  Raises:
    ValueError: an unknown name (the known ones are listed).
  """
  if name not in PACKAGED:
    raise ValueError(f"unknown packaged data 'package:{name}'; expected one of "
                     f"{['package:' + n for n in PACKAGED]}")
  root = importlib.resources.files(PACKAGE_DATA_OWNER)
  return pathlib.Path(str(root.joinpath(PACKAGED[name])))


def resolve_data_path(path: str | pathlib.Path) -> pathlib.Path:
  """Resolves a data path from a config (see the module docstring).

  Args:
    path: a filesystem path, a `../shared/...` path or a 'package:NAME'.

  Returns:
    The resolved path (it may not exist; callers decide whether that is fatal).

  Raises:
    ValueError: an unknown 'package:' name.
  """
  text = str(path)
  if text.startswith("package:"):
    return packaged_path(text[len("package:"):])
  parts = pathlib.PurePosixPath(text).parts
  if parts[:2] == ("..", "shared") and os.environ.get(SHARED_DIR_ENV):
    return shared_dir().joinpath(*parts[2:])
  return pathlib.Path(text).expanduser()
