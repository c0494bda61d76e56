"""Entry points: `open_model` (streaming) and `load_model` (whole params tree) for any format."""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Optional

from penrose_jax.io.errors import CheckpointFormatError
from penrose_jax.io.gguf_reader import GGUFModelReader, find_default_gguf
from penrose_jax.io.hf_checkpoint import HFModelReader
from penrose_jax.io.reader_base import ModelReader
from penrose_jax.io.tokenizer import TextTokenizer
from penrose_jax.models.config import ModelConfig

_GGUF_MAGIC = b"GGUF"


@dataclasses.dataclass
class LoadedModel:
  """A model read into memory.

  Attributes:
    config: architecture hyper-parameters.
    params: the params pytree (float32 jax arrays; layout in docs/CONTRACTS_DEV.md).
    tokenizer: the model's tokenizer (None for an HF directory without tokenizer.json).
    path: where it was read from.
  """

  config: ModelConfig
  params: dict[str, Any]
  tokenizer: Optional[TextTokenizer]
  path: Optional[pathlib.Path] = None


def open_model(path: Optional[str | os.PathLike] = None) -> ModelReader:
  """Opens a model for streaming reads, reading metadata and checking tensor shapes only.

  Args:
    path: a .gguf file or a Hugging Face directory (config.json + safetensors); None opens the
      default model (`find_default_gguf()`).

  Returns:
    A ModelReader (`.config`, `.tokenizer`, `.read_globals()`, `.read_layer(i)`).

  Raises:
    CheckpointFormatError: the path is missing, of an unknown kind, or inconsistent.
  """
  path = find_default_gguf() if path is None else pathlib.Path(path)
  if path.is_dir():
    if not (path / "config.json").is_file():
      raise CheckpointFormatError(f"{path}: directory has no config.json (expected a Hugging "
                                  "Face model directory or a .gguf file)")
    return HFModelReader(path)
  if path.is_file():
    with open(path, "rb") as f:
      magic = f.read(4)
    if magic == _GGUF_MAGIC or path.suffix == ".gguf":
      return GGUFModelReader(path)
    raise CheckpointFormatError(f"{path}: not a GGUF file (starts with {magic!r}) nor a Hugging "
                                "Face model directory")
  raise CheckpointFormatError(f"{path}: no such file or directory")


def load_model(path: Optional[str | os.PathLike] = None) -> LoadedModel:
  """Reads a whole model: config, params and tokenizer.

  Args:
    path: a .gguf file or a Hugging Face directory; None loads the default model.

  Returns:
    The LoadedModel.
  """
  with open_model(path) as reader:
    params = reader.read_globals()
    for index in range(reader.num_layers):
      params.update(reader.read_layer(index))
    return LoadedModel(config=reader.config, params=params, tokenizer=reader.tokenizer,
                       path=reader.path)
