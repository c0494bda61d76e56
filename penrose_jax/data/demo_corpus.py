"""The demo materials-science corpus shipped as package data (penrose_jax/data/corpus/).

Contents: 13 Markdown documents (# title, 4 ## sections each), `heldout_questions.jsonl`
(multiple-choice questions never used for training) and `curated_qa.jsonl` (curated training
Q&A). Packaging needs package_data {'penrose_jax.data': ['corpus/*.md', 'corpus/*.jsonl']}.
"""

from __future__ import annotations

import pathlib

from penrose_jax.data import paths

HELDOUT_FILE = 'heldout_questions.jsonl'
CURATED_FILE = 'curated_qa.jsonl'


def demo_corpus_dir() -> pathlib.Path:
  """Path of the shipped demo corpus folder (a real directory for regular installs)."""
  path = paths.packaged_path('demo_corpus')  # the 'package:' names live in data/paths.py
  if not path.is_dir():
    raise FileNotFoundError(f'demo corpus not found at {path}; is package data installed?')
  return path


def demo_heldout_path() -> pathlib.Path:
  """Path of the held-out multiple-choice questions of the demo corpus."""
  return demo_corpus_dir() / HELDOUT_FILE


def demo_curated_path() -> pathlib.Path:
  """Path of the curated training Q&A of the demo corpus."""
  return demo_corpus_dir() / CURATED_FILE
