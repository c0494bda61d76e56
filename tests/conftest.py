"""Shared fixtures: one tiny model checkpoint per test session."""

import pathlib

import pytest

from penrose_jax.io import model_registry


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> pathlib.Path:
  """The 'tiny' model (random weights, BPE tokenizer trained on the demo corpus) on disk."""
  return model_registry.build_tiny_model(tmp_path_factory.mktemp("tiny_model") / "tiny")
