"""TextTokenizer: rebuilt from GGUF metadata, saved/loaded as HF files, real-model round trips."""

from __future__ import annotations

import json

import pytest

from penrose_jax.io import CheckpointFormatError, TextTokenizer, find_default_gguf
from penrose_jax.io.gguf_reader import gguf_metadata, open_gguf_file

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
ROUND_TRIP_TEXTS = [
    "Hello world",
    "  leading spaces and trailing  ",
    "digits 1234567890 and 3.14159, -42",
    "line one\nline two\r\n\n\ttabbed",
    "unicode: naïve café — 日本語テキスト 🙂 Ελληνικά",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "code: def f(x):\n    return x ** 2  # square",
    "",
]


def _byte_chars() -> list[str]:
  keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
  table, extra = {}, 0
  for b in range(256):
    if b in keep:
      table[b] = chr(b)
    else:
      table[b] = chr(256 + extra)
      extra += 1
  return [table[b] for b in range(256)]


def tiny_metadata(pre: str = "smollm") -> dict:
  tokens = SPECIALS + _byte_chars() + ["Ġt", "he", "Ġthe"]
  return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre,
          "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.merges": ["Ġ t", "h e", "Ġt he"],
          "tokenizer.ggml.token_type": [3] * 3 + [1] * (len(tokens) - 3),
          "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
          "tokenizer.ggml.padding_token_id": 0, "tokenizer.chat_template": TEMPLATE}


def test_tiny_bpe_merges_specials_and_round_trip():
  tok = TextTokenizer.from_gguf_metadata(tiny_metadata())
  ids = tok.encode("a the")
  assert ids[-1] == tok.tokenizer.token_to_id("Ġthe") and len(ids) == 2
  assert tok.encode("<|im_end|>") == [2]
  assert tok.encode("x", add_bos=True)[0] == 1
  assert (tok.bos_token, tok.eos_token, tok.pad_token_id) == ("<|im_start|>", "<|im_end|>", 0)
  assert tok.stop_token_ids == (2, 0)
  assert tok.vocab_size == 3 + 256 + 3
  for text in ROUND_TRIP_TEXTS:
    assert tok.decode(tok.encode(text)) == text
  assert tok.decode(tok.encode("<|im_start|>hi"), skip_special_tokens=True) == "hi"


def test_pre_tokenizer_choice():
  smollm = TextTokenizer.from_gguf_metadata(tiny_metadata("smollm")).tokenizer.pre_tokenizer
  plain = TextTokenizer.from_gguf_metadata(tiny_metadata("default")).tokenizer.pre_tokenizer
  assert [p for p, _ in smollm.pre_tokenize_str("ab 123")] == ["ab", "Ġ", "1", "2", "3"]
  assert [p for p, _ in plain.pre_tokenize_str("ab 123")] == ["ab", "Ġ123"]


def test_chat_template_rendering():
  tok = TextTokenizer.from_gguf_metadata(tiny_metadata())
  messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
  assert tok.apply_chat_template(messages) == (
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
      "<|im_start|>assistant\n")
  assert tok.apply_chat_template(messages, add_generation_prompt=False).endswith("Hi<|im_end|>\n")
  no_template = TextTokenizer(tok.tokenizer)
  with pytest.raises(ValueError, match="no chat template"):
    no_template.apply_chat_template(messages)


def test_save_and_load_hf_directory(tmp_path):
  tok = TextTokenizer.from_gguf_metadata(tiny_metadata())
  tok.save(tmp_path)
  config = json.loads((tmp_path / "tokenizer_config.json").read_text())
  assert config["chat_template"] == TEMPLATE and config["eos_token"] == "<|im_end|>"
  assert config["added_tokens_decoder"]["1"]["content"] == "<|im_start|>"
  loaded = TextTokenizer.from_directory(tmp_path)
  assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (1, 2, 0)
  assert loaded.chat_template == TEMPLATE and loaded.stop_token_ids == tok.stop_token_ids
  for text in ROUND_TRIP_TEXTS:
    assert loaded.encode(text) == tok.encode(text)


def test_bad_inputs(tmp_path):
  with pytest.raises(CheckpointFormatError, match="tokenizer.json: tokenizer file not found"):
    TextTokenizer.from_directory(tmp_path)
  (tmp_path / "tokenizer.json").write_text("{not json")
  with pytest.raises(CheckpointFormatError, match="tokenizer.json: unreadable"):
    TextTokenizer.from_directory(tmp_path)
  metadata = dict(tiny_metadata(), **{"tokenizer.ggml.model": "llama"})
  with pytest.raises(CheckpointFormatError, match="tokenizer.ggml.model='llama' is not supported"):
    TextTokenizer.from_gguf_metadata(metadata, "x.gguf")


# ---------------------------------------------------------------- the real default model


@pytest.fixture(scope="module")
def real_tokenizer():
  try:
    path = find_default_gguf()
  except FileNotFoundError as err:
    pytest.skip(f"default model not installed: {err}")
  return TextTokenizer.from_gguf_metadata(gguf_metadata(open_gguf_file(path)), str(path))


@pytest.mark.slow
def test_real_round_trip(real_tokenizer, tmp_path):
  tok = real_tokenizer
  for text in ROUND_TRIP_TEXTS:
    ids = tok.encode(text)
    assert tok.decode(ids) == text, text
  assert tok.encode("Hello world") == [19556, 905]  # 'Hello', 'Ġworld'
  assert tok.encode("<|im_start|>") == [1] and tok.encode("2024") == [34, 32, 34, 36]
  assert len(tok.encode(ROUND_TRIP_TEXTS[4])) < len(ROUND_TRIP_TEXTS[4].encode("utf-8"))
  assert tok.vocab_size == 49152 and tok.eos_token == "<|im_end|>"
  assert set(tok.stop_token_ids) == {2, 0}
  prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
  assert prompt.startswith("<|im_start|>system\n") and prompt.endswith(
      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
  tok.save(tmp_path)
  loaded = TextTokenizer.from_directory(tmp_path)
  for text in ROUND_TRIP_TEXTS:
    assert loaded.encode(text) == tok.encode(text)
  assert loaded.apply_chat_template([{"role": "user", "content": "Hi"}]) == prompt
