"""`TextTokenizer`: a `tokenizers.Tokenizer` plus special ids and the chat template.

Built either from GGUF metadata (byte-level BPE rebuilt from `tokenizer.ggml.tokens` and
`tokenizer.ggml.merges`) or from a Hugging Face directory (tokenizer.json +
tokenizer_config.json), and saved back in the Hugging Face layout.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import pathlib
from typing import Any, Mapping, Optional, Sequence

import jinja2
import jinja2.ext
import jinja2.sandbox
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors

from penrose_jax.io.errors import CheckpointFormatError
from penrose_jax.io.json_files import read_json, write_json_atomic

# llama.cpp token types (gguf.TokenType).
_TOKEN_TYPE_CONTROL = 3
_TOKEN_TYPE_USER_DEFINED = 4
# Tokens that end a chat turn in the families we read.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>")
# Split regexes of pre-tokenizers that are not plain GPT-2 (tokenizer.ggml.pre values).
_SPLIT_REGEXES = {
    "llama-bpe": (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
    "qwen2": (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
              r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
}
_SPLIT_REGEXES["llama3"] = _SPLIT_REGEXES["llama-bpe"]


def _byte_level_pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
  """Returns the pre-tokenizer matching a GGUF `tokenizer.ggml.pre` name."""
  if pre in ("smollm", "starcoder", "refact"):
    return pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
  if pre in _SPLIT_REGEXES:
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(_SPLIT_REGEXES[pre]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  return pre_tokenizers.ByteLevel(add_prefix_space=False)


def _raise_exception(message: str) -> None:
  raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: Optional[int] = None,
            separators: Optional[tuple[str, str]] = None, sort_keys: bool = False) -> str:
  return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                    sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
  return datetime.datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=16)
def _compile_chat_template(template: str) -> jinja2.Template:
  """Compiles a chat template the way transformers does (sandboxed, trimmed blocks)."""
  env = jinja2.sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
  env.filters["tojson"] = _tojson
  env.globals["raise_exception"] = _raise_exception
  env.globals["strftime_now"] = _strftime_now
  return env.from_string(template)


def _token_content(value: Any) -> Optional[str]:
  """Reads a special token entry of tokenizer_config.json (a string or an AddedToken dict)."""
  if isinstance(value, Mapping):
    return value.get("content")
  return value if isinstance(value, str) else None


class TextTokenizer:
  """Text <-> token ids, special ids and chat formatting for one model.

  Attributes:
    tokenizer: the wrapped `tokenizers.Tokenizer`.
    bos_token_id, eos_token_id, pad_token_id: special ids (-1 when absent).
    chat_template: Jinja chat template (None when the model has none).
    add_bos_token: whether the model's own tokenizer prepends BOS by default (informational;
      `encode` only adds it when asked).
  """

  def __init__(self, tokenizer: tokenizers.Tokenizer, bos_token_id: int = -1,
               eos_token_id: int = -1, pad_token_id: int = -1,
               chat_template: Optional[str] = None, extra_stop_token_ids: Sequence[int] = (),
               add_bos_token: bool = False, model_max_length: Optional[int] = None):
    """Wraps a tokenizer.

    Args:
      tokenizer: a `tokenizers.Tokenizer`.
      bos_token_id: beginning-of-sequence id, -1 if none.
      eos_token_id: end-of-sequence id, -1 if none.
      pad_token_id: padding id, -1 if none.
      chat_template: Jinja chat template text.
      extra_stop_token_ids: ids besides EOS and the known end-of-turn tokens that end generation.
      add_bos_token: whether the model's tokenizer adds BOS by default.
      model_max_length: context length recorded in tokenizer_config.json.
    """
    self.tokenizer = tokenizer
    self.bos_token_id = int(bos_token_id)
    self.eos_token_id = int(eos_token_id)
    self.pad_token_id = int(pad_token_id)
    self.chat_template = chat_template
    self.add_bos_token = bool(add_bos_token)
    self.model_max_length = model_max_length
    stops = [self.eos_token_id] if self.eos_token_id >= 0 else []
    stops += [int(i) for i in extra_stop_token_ids]
    for token in END_OF_TURN_TOKENS:
      token_id = tokenizer.token_to_id(token)
      if token_id is not None:
        stops.append(token_id)
    self.stop_token_ids: tuple[int, ...] = tuple(dict.fromkeys(stops))

  @property
  def vocab_size(self) -> int:
    """Number of ids the tokenizer can produce, added tokens included."""
    return self.tokenizer.get_vocab_size(with_added_tokens=True)

  @property
  def bos_token(self) -> Optional[str]:
    """The BOS token string (None if absent)."""
    return self.tokenizer.id_to_token(self.bos_token_id) if self.bos_token_id >= 0 else None

  @property
  def eos_token(self) -> Optional[str]:
    """The EOS token string (None if absent)."""
    return self.tokenizer.id_to_token(self.eos_token_id) if self.eos_token_id >= 0 else None

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    """Tokenizes text; special-token strings in the text map to their ids.

    Args:
      text: the text.
      add_bos: prepend the BOS id (when the model has one).

    Returns:
      Token ids.
    """
    ids = self.tokenizer.encode(text, add_special_tokens=False).ids
    if add_bos and self.bos_token_id >= 0:
      ids = [self.bos_token_id] + ids
    return ids

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
    """Turns ids back into text.

    Args:
      ids: token ids.
      skip_special_tokens: drop special tokens instead of writing their strings.

    Returns:
      The text.
    """
    return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def apply_chat_template(self, messages: Sequence[Mapping[str, Any]],
                          add_generation_prompt: bool = True, **kwargs: Any) -> str:
    """Renders a conversation with the model's chat template, as transformers does.

    Args:
      messages: [{'role': ..., 'content': ...}, ...].
      add_generation_prompt: append the prompt that starts the assistant's turn.
      **kwargs: extra template variables.

    Returns:
      The prompt text (tokenize it with `encode`).
    """
    if not self.chat_template:
      raise ValueError("this tokenizer has no chat template")
    return _compile_chat_template(self.chat_template).render(
        messages=list(messages), add_generation_prompt=add_generation_prompt,
        bos_token=self.bos_token or "", eos_token=self.eos_token or "", **kwargs)

  def _special_token(self, token_id: int) -> Optional[str]:
    return self.tokenizer.id_to_token(token_id) if token_id >= 0 else None

  def save(self, directory: str | os.PathLike) -> None:
    """Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json (HF layout).

    Args:
      directory: target directory (created if needed).
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    self.tokenizer.save(str(directory / "tokenizer.json"))
    added = {}
    for token_id, token in sorted(self.tokenizer.get_added_tokens_decoder().items()):
      added[str(token_id)] = {"content": token.content, "lstrip": token.lstrip,
                              "normalized": token.normalized, "rstrip": token.rstrip,
                              "single_word": token.single_word, "special": token.special}
    special = {"bos_token": self._special_token(self.bos_token_id),
               "eos_token": self._special_token(self.eos_token_id),
               "pad_token": self._special_token(self.pad_token_id)}
    special = {k: v for k, v in special.items() if v is not None}
    config = {"add_bos_token": self.add_bos_token, "add_prefix_space": False,
              "added_tokens_decoder": added, **special,
              "clean_up_tokenization_spaces": False,
              "tokenizer_class": "PreTrainedTokenizerFast"}
    if self.chat_template:
      config["chat_template"] = self.chat_template
    if self.model_max_length:
      config["model_max_length"] = int(self.model_max_length)
    write_json_atomic(directory / "tokenizer_config.json", config)
    write_json_atomic(directory / "special_tokens_map.json", special)

  @classmethod
  def from_directory(cls, directory: str | os.PathLike, bos_token_id: Optional[int] = None,
                     eos_token_id: Optional[int] = None) -> "TextTokenizer":
    """Loads a Hugging Face tokenizer directory (tokenizer.json [+ tokenizer_config.json]).

    Args:
      directory: the directory.
      bos_token_id: fallback BOS id (e.g. from config.json) if tokenizer_config.json has none.
      eos_token_id: fallback EOS id.

    Returns:
      The TextTokenizer.
    """
    directory = pathlib.Path(directory)
    path = directory / "tokenizer.json"
    if not path.is_file():
      raise CheckpointFormatError(f"{path}: tokenizer file not found")
    try:
      tokenizer = tokenizers.Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception on bad JSON.
      raise CheckpointFormatError(f"{path}: unreadable tokenizer file ({err})") from err
    config = read_json(directory / "tokenizer_config.json") or {}
    generation = read_json(directory / "generation_config.json") or {}

    def lookup(key: str, fallback: Optional[int]) -> int:
      content = _token_content(config.get(key))
      token_id = tokenizer.token_to_id(content) if content else None
      if token_id is None:
        token_id = fallback
      return -1 if token_id is None else int(token_id)

    template = config.get("chat_template")
    if isinstance(template, list):  # [{'name': 'default', 'template': ...}, ...]
      named = {t.get("name"): t.get("template") for t in template}
      template = named.get("default") or next(iter(named.values()), None)
    if template is None and (directory / "chat_template.jinja").is_file():
      template = (directory / "chat_template.jinja").read_text(encoding="utf-8")
    gen_eos = generation.get("eos_token_id")
    extra_stops = gen_eos if isinstance(gen_eos, list) else ([gen_eos] if gen_eos else [])
    return cls(tokenizer, bos_token_id=lookup("bos_token", bos_token_id),
               eos_token_id=lookup("eos_token", eos_token_id),
               pad_token_id=lookup("pad_token", None), chat_template=template,
               extra_stop_token_ids=extra_stops,
               add_bos_token=bool(config.get("add_bos_token", False)),
               model_max_length=config.get("model_max_length"))

  @classmethod
  def from_gguf_metadata(cls, metadata: Mapping[str, Any], source: str = "GGUF file"
                         ) -> "TextTokenizer":
    """Rebuilds the tokenizer from GGUF `tokenizer.*` metadata (byte-level BPE models).

    Args:
      metadata: GGUF key -> value (tokens, merges and token types as lists).
      source: file name used in error messages.

    Returns:
      The TextTokenizer.
    """
    kind = metadata.get("tokenizer.ggml.model")
    if kind != "gpt2":
      raise CheckpointFormatError(f"{source}: tokenizer.ggml.model={kind!r} is not supported "
                                  "(only byte-level BPE 'gpt2' tokenizers)")
    tokens = metadata.get("tokenizer.ggml.tokens")
    merges = metadata.get("tokenizer.ggml.merges")
    if not tokens or merges is None:
      raise CheckpointFormatError(
          f"{source}: missing tokenizer.ggml.tokens or tokenizer.ggml.merges")
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
      vocab.setdefault(token, index)
    pairs = []
    for merge in merges:
      left, _, right = merge.partition(" ")
      pairs.append((left, right))
    tokenizer = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False,
                                                byte_fallback=False))
    tokenizer.pre_tokenizer = _byte_level_pre_tokenizer(metadata.get("tokenizer.ggml.pre", ""))
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    token_types = metadata.get("tokenizer.ggml.token_type") or []
    special, user = [], []
    for index, token_type in enumerate(token_types):
      if token_type == _TOKEN_TYPE_CONTROL:
        special.append(tokenizers.AddedToken(tokens[index], special=True, normalized=False))
      elif token_type == _TOKEN_TYPE_USER_DEFINED:
        user.append(tokenizers.AddedToken(tokens[index], special=False, normalized=False))
    if special:
      tokenizer.add_special_tokens(special)
    if user:
      tokenizer.add_tokens(user)

    def special_id(key: str) -> int:
      value = metadata.get(f"tokenizer.ggml.{key}")
      return -1 if value is None else int(value)

    return cls(tokenizer, bos_token_id=special_id("bos_token_id"),
               eos_token_id=special_id("eos_token_id"),
               pad_token_id=special_id("padding_token_id"),
               chat_template=metadata.get("tokenizer.chat_template"),
               add_bos_token=bool(metadata.get("tokenizer.ggml.add_bos_token", False)))

