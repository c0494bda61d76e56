"""Plain-text sources for calibration, perplexity and replay, named by a path in a config.

A source spec is a path, optionally with a split filter after '@':
  - a folder of .txt / .md files (sorted by name);
  - a single text file;
  - a .jsonl file: each line's 'text', else 'context' + ' ' + 'continuation' (LAMBADA), else
    'query' (multiple-choice files);
  - 'DIR@train' keeps only files whose stem is listed with set == train in DIR/../metadata.tsv
    (the SOFC-Exp layout), so calibration and evaluation can use disjoint articles.
PATH is resolved by `paths.resolve_data_path` ('package:' names, ../shared).
"""

from __future__ import annotations

import json
import pathlib
from typing import Mapping, Optional, Sequence

import numpy as np

from penrose_jax.data import paths


def read_split_metadata(tsv_path: str | pathlib.Path, split_column: str = "set"
                        ) -> dict[str, dict[str, str]]:
  """Reads a metadata TSV with a 'name' column (doc_id) and a split column (e.g. train/dev).

  Args:
    tsv_path: e.g. the metadata.tsv beside a corpus folder.
    split_column: column holding the split name.

  Returns:
    doc_id -> row dict (all columns as strings).

  Raises:
    ValueError: when 'name' or the split column is missing (the file is named).
  """
  lines = pathlib.Path(tsv_path).read_text(encoding="utf-8").splitlines()
  header = lines[0].split("\t") if lines else []
  if "name" not in header or split_column not in header:
    raise ValueError(f"{tsv_path}: header needs name and {split_column} columns")
  rows = [dict(zip(header, line.split("\t"))) for line in lines[1:] if line.strip()]
  return {row["name"]: row for row in rows}


def selected_text_sets(text_sets: Mapping[str, str], skip: str = "") -> dict[str, str]:
  """The text sets of a config minus those a run leaves out.

  Args:
    text_sets: name -> source spec (a config's `text_sets`).
    skip: comma list of names to leave out ('' = none), e.g. the `skip_text_sets` field.

  Returns:
    name -> spec of the kept sets, in the config's order.

  Raises:
    ValueError: a skipped name that is not a text set (a typo would otherwise measure
      everything silently).
  """
  names = [n.strip() for n in skip.split(",") if n.strip()]
  unknown = [n for n in names if n not in text_sets]
  if unknown:
    raise ValueError(f"skip_text_sets names {unknown}, which are not text sets; the text sets "
                     f"are {sorted(text_sets)}")
  return {name: spec for name, spec in text_sets.items() if name not in names}


def _split_names(folder: pathlib.Path, split: str) -> set[str]:
  for candidate in (folder / "metadata.tsv", folder.parent / "metadata.tsv"):
    if candidate.is_file():
      rows = read_split_metadata(candidate)
      return {name for name, row in rows.items() if row.get("set") == split}
  raise FileNotFoundError(f"text source {folder}@{split}: no metadata.tsv beside {folder} to "
                          "read the split from")


def source_path(spec: str) -> pathlib.Path:
  """The filesystem path of a source spec (without its '@split').

  Args:
    spec: 'PATH' or 'PATH@SPLIT'.

  Returns:
    The path.
  """
  return paths.resolve_data_path(spec.split("@", 1)[0])


def read_source(spec: str, max_docs: Optional[int] = None) -> list[tuple[str, str]]:
  """Reads the documents of one source spec.

  Args:
    spec: see module docstring.
    max_docs: keep only the first this many documents.

  Returns:
    List of (name, text).

  Raises:
    FileNotFoundError: missing path, or a folder with no text files.
    ValueError: non-UTF-8 text or a malformed JSONL line (file and line named).
  """
  path = source_path(spec)
  split = spec.split("@", 1)[1] if "@" in spec else None
  if not path.exists():
    raise FileNotFoundError(f"text source {path} does not exist")
  docs: list[tuple[str, str]] = []
  if path.is_dir():
    files = sorted(f for pattern in ("*.txt", "*.md") for f in path.glob(pattern))
    if split is not None:
      keep = _split_names(path, split)
      files = [f for f in files if f.stem in keep]
    if not files:
      raise FileNotFoundError(f"text source {spec}: no .txt/.md files found")
    for file in files:
      try:
        docs.append((file.stem, file.read_text(encoding="utf-8")))
      except UnicodeDecodeError as err:
        raise ValueError(f"{file}: not valid UTF-8 text ({err})") from err
  elif path.suffix == ".jsonl":
    with path.open(encoding="utf-8") as handle:
      for line_no, line in enumerate(handle, 1):
        if not line.strip():
          continue
        try:
          row = json.loads(line)
        except json.JSONDecodeError as err:
          raise ValueError(f"{path}:{line_no}: not valid JSON ({err})") from err
        if "text" in row:
          text = row["text"]
        elif "context" in row:
          text = row["context"] + " " + row.get("continuation", "")
        elif "query" in row:
          text = row["query"]
        else:
          raise ValueError(f"{path}:{line_no}: expected a 'text', 'context' or 'query' field")
        docs.append((f"{path.stem}-{line_no}", text))
        if max_docs is not None and len(docs) >= max_docs:
          break
  else:
    try:
      docs.append((path.stem, path.read_text(encoding="utf-8")))
    except UnicodeDecodeError as err:
      raise ValueError(f"{path}: not valid UTF-8 text ({err})") from err
  return docs if max_docs is None else docs[:max_docs]


def available_sources(specs: Sequence[str]) -> tuple[list[str], list[str]]:
  """Splits source specs into those whose path exists and those skipped.

  Args:
    specs: source specs.

  Returns:
    (available, skipped_messages).
  """
  available, skipped = [], []
  for spec in specs:
    if source_path(spec).exists():
      available.append(spec)
    else:
      skipped.append(f"text source {spec}: {source_path(spec)} not found")
  return available, skipped


def token_windows_from_sources(specs: Sequence[str], tokenizer, num_windows: int, window: int,
                               seed: int = 0, max_docs_per_source: Optional[int] = 2000
                               ) -> np.ndarray:
  """Equal shares of full `window`-token windows from each source, concatenated per source.

  Documents of one source are joined (with a newline) so short passages still fill windows;
  windows are cut without overlap over all its documents (up to the cap), then each source's
  share is drawn with a fixed seed.

  Args:
    specs: available source specs (see `available_sources`).
    tokenizer: a TextTokenizer.
    num_windows: total windows wanted.
    window: tokens per window.
    seed: sampling seed.
    max_docs_per_source: cap on documents read per source (LAMBADA has 5k passages).

  Returns:
    (num_windows, window) int32 array (fewer rows if the text runs out).

  Raises:
    ValueError: when no source gives a single full window.
  """
  rng = np.random.default_rng(seed)
  per_source = [num_windows // len(specs) + (i < num_windows % len(specs))
                for i in range(len(specs))]
  rows = []
  for spec, share in zip(specs, per_source):
    ids: list[int] = []
    # Every document up to the cap, so the windows sample the whole source rather than the
    # first few files (SOFC train: ~3 of 26 articles before).
    for _, text in read_source(spec, max_docs_per_source):
      ids.extend(tokenizer.encode(text + "\n"))
    count = len(ids) // window
    if count == 0:
      continue
    windows = np.asarray(ids[:count * window], np.int32).reshape(count, window)
    pick = rng.choice(count, size=min(share, count), replace=False)
    rows.append(windows[np.sort(pick)])
  if not rows:
    raise ValueError(f"text sources {list(specs)} hold no full {window}-token window")
  return np.concatenate(rows, axis=0)


def windows_from_existing_sources(specs: Sequence[str], tokenizer, num_windows: int, window: int,
                                  seed: int = 0, what: str = "text"
                                  ) -> tuple[np.ndarray, list[str], list[str]]:
  """`token_windows_from_sources` over the specs whose paths exist; the rest are skipped.

  Args:
    specs: source specs (some may be missing, e.g. no ../shared beside a fresh clone).
    tokenizer: a TextTokenizer.
    num_windows: total windows wanted.
    window: tokens per window.
    seed: sampling seed.
    what: what the sources are for, used in the error message.

  Returns:
    (tokens (N, window), specs used, skipped messages).

  Raises:
    FileNotFoundError: when none of the sources exists.
  """
  used, skipped = available_sources(list(specs))
  if not used:
    raise FileNotFoundError(f"none of the {what} sources exist: {list(specs)}")
  return token_windows_from_sources(used, tokenizer, num_windows, window, seed), used, skipped
