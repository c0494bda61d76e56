"""Write a (compressed) params tree as a llama.cpp GGUF file, in standard block types.

The file copies every key/value of the GGUF the model came from (architecture, tokenizer,
chat template), except the ones that describe the old file's encoding (`general.file_type`,
`general.alignment`, `general.quantization_version`), and lays tensors out as that file does
(names, (out, in) order, llama.cpp's interleaved q/k rows), so `GGUFModelReader` and llama.cpp
read it back. Each tensor is written in a standard type through `gguf.quants.quantize`:

  RTN / GPTQ int8 kernels          -> Q8_0    (8.5 bits per weight)
  RTN / GPTQ int4 and int3 kernels -> Q4_0    (4.5 bits per weight)
  dense / low-rank kernels         -> `dense_type` (default F16; low-rank leaves multiplied out)
  embedding, LM head               -> `embed_type` (default Q8_0, as in the source file)
  norms and biases                 -> F32

A plain quantized kernel (RTN / GPTQ, no correction) is copied block for block: our values are
symmetric integers (|q| <= 7 at int4, 3 at int3, 127 at int8) times one float16 scale per
group of 32 or 64 inputs, and a GGML Q4_0 / Q8_0 block is 32 inputs of integers in [-8, 7] /
[-127, 127] times one float16 `d`, so d = our scale and the integers go in unchanged: the file
holds exactly the checkpoint's weights (`exact_kernels` counts them). Other quantized leaves
(a low-rank correction on top) and groups that do not line up with 32-blocks are rounded again
by `gguf.quants.quantize`, whose scale is the block's largest value over the grid's end;
`write_gguf` reports the relative error that adds. A row whose length is not a multiple of the
block size falls back to F16.
"""

from __future__ import annotations

import pathlib
from typing import Any, Mapping

import gguf
import numpy as np
from gguf.gguf_writer import WriterState

from penrose_jax.io.gguf_reader import GGUFModelReader
from penrose_jax.io.reader_base import permute_rope_rows
from penrose_jax.reporting.report_json import write_file_atomic

Q = gguf.GGMLQuantizationType
# Keys describing the old file's encoding, not the model: never copied.
_SKIPPED_KEYS = ("general.architecture", "general.file_type", "general.alignment",
                 "general.quantization_version")
_TYPE_FOR_BITS = {8: Q.Q8_0, 4: Q.Q4_0, 3: Q.Q4_0}
_FLOAT_TYPES = {"F32": Q.F32, "F16": Q.F16}
WRITABLE_TYPES = ("F32", "F16", "Q8_0", "Q4_0", "Q4_1")


def _leaf_at(params: Mapping[str, Any], path: tuple[str, ...]) -> Any:
  node: Any = params
  for key in path:
    if not isinstance(node, Mapping) or key not in node:
      raise ValueError(f"params have no leaf at {'/'.join(path)}")
    node = node[key]
  return node


def _dense(leaf: Any) -> np.ndarray:
  """A leaf's float32 numpy matrix (compressed leaves multiplied out / dequantized)."""
  if hasattr(leaf, "materialize_host"):
    return np.asarray(leaf.materialize_host(), np.float32)
  if hasattr(leaf, "materialize"):
    return np.asarray(leaf.materialize(), np.float32)
  return np.asarray(leaf, np.float32)


def _chosen_type(leaf: Any, is_kernel: bool, is_embedding: bool, dense_type: str,
                 embed_type: str) -> Any:
  bits = getattr(getattr(leaf, "weight", None), "bits", None)
  if bits in _TYPE_FOR_BITS:
    return _TYPE_FOR_BITS[bits]
  if is_embedding:
    return Q[embed_type]
  if is_kernel:
    return Q[dense_type]
  return Q.F32


def _file_order(array: np.ndarray, spec: Any) -> np.ndarray:
  """An (in, out) kernel-shaped array in the source file's tensor layout."""
  if spec.transpose:
    array = array.T
  if spec.rope_heads:
    array = permute_rope_rows(array, spec.rope_heads)
  return array


def _element_scales(leaf: Any, array: np.ndarray) -> np.ndarray | None:
  """Each weight's float16 group scale (params layout) when `leaf` is a plain quantized kernel.

  Args:
    leaf: a params leaf.
    array: its dequantized float32 matrix.

  Returns:
    The scales broadcast to `array`'s shape, or None when the leaf's matrix is not exactly its
    quantized weight (a dense or low-rank leaf, or a correction added on top).
  """
  weight = getattr(leaf, "weight", None)
  if not all(hasattr(weight, name) for name in ("q", "scale", "dense_host", "replace")):
    return None
  if not np.array_equal(weight.dense_host(), array):
    return None
  # The same groups with every integer 1 dequantize to each weight's scale.
  ones = weight.replace(q=np.ones(np.shape(weight.q), np.int8))
  return np.asarray(ones.dense_host(), np.float32)


def _pack_blocks(array: np.ndarray, scales: np.ndarray, qtype: Any) -> np.ndarray | None:
  """GGML Q4_0 / Q8_0 bytes holding `array` exactly, or None where that is not possible.

  Args:
    array: (rows, cols) float32 weights in file order, each an integer times its scale.
    scales: the per-weight scales, same shape.
    qtype: Q.Q4_0 or Q.Q8_0.

  Returns:
    uint8 (rows, cols // 32 * block bytes), as `gguf.quants.quantize` returns; None when a
    32-block has more than one scale or an integer outside the type's range.
  """
  block = 32
  lo, hi = (-8, 7) if qtype == Q.Q4_0 else (-127, 127)
  rows, cols = array.shape
  if cols % block:
    return None
  s = scales.reshape(rows, cols // block, block)
  if not np.all(s == s[..., :1]):
    return None
  d = s[..., 0]
  ints = np.rint(np.divide(array.reshape(s.shape), s, out=np.zeros(s.shape, np.float32),
                           where=s > 0))
  if ints.min() < lo or ints.max() > hi or not np.array_equal(ints * s, array.reshape(s.shape)):
    return None
  head = d.astype(np.float16)[..., None].view(np.uint8)  # (rows, blocks, 2), little endian
  if qtype == Q.Q8_0:
    body = ints.astype(np.int8).view(np.uint8)
  else:  # qs[j] = (x[j] + 8) | (x[j + 16] + 8) << 4
    nib = (ints + 8).astype(np.uint8)
    body = nib[..., :16] | (nib[..., 16:] << 4)
  return np.concatenate([head, body], axis=-1).reshape(rows, -1)


def _encode(array: np.ndarray, qtype: Any) -> tuple[np.ndarray, Any]:
  """(data to write, type written): quantized bytes, or float arrays for F32 / F16."""
  if qtype == Q.F32:
    return array.astype(np.float32), Q.F32
  if qtype == Q.F16:
    return array.astype(np.float16), Q.F16
  block = gguf.GGML_QUANT_SIZES[qtype][0]
  if array.ndim != 2 or array.shape[-1] % block:
    return array.astype(np.float16), Q.F16  # GGML blocks run along rows of whole blocks
  return gguf.quants.quantize(array, qtype), qtype


def _copy_metadata(reader: GGUFModelReader, writer: gguf.GGUFWriter) -> None:
  for key, field in reader._reader.fields.items():  # pylint: disable=protected-access
    if key.startswith("GGUF.") or key in _SKIPPED_KEYS:
      continue
    vtype = field.types[0]
    sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
    writer.add_key_value(key, field.contents(), vtype, sub_type)


def write_gguf(path: str | pathlib.Path, params: Mapping[str, Any],
               source_gguf: str | pathlib.Path, dense_type: str = "F16",
               embed_type: str = "Q8_0") -> dict[str, Any]:
  """Writes params (dense or with compressed leaves) as a GGUF file.

  Args:
    path: destination .gguf (written through a temp file and renamed).
    params: the per-layer params tree of the model read from `source_gguf` (same shapes).
    source_gguf: the GGUF the model came from: metadata, tokenizer and tensor layout source.
    dense_type: type of float kernels (dense or low-rank leaves): one of WRITABLE_TYPES.
    embed_type: type of the embedding and untied LM head: one of WRITABLE_TYPES.

  Returns:
    {'file_size', 'types' (GGML type -> tensor count), 'projection_bytes' (bytes of the layer
    kernels' tensor data), 'exact_kernels' (quantized kernels copied block for block),
    'requantization_rel_error' (relative Frobenius error the GGML re-rounding added over all
    quantized kernels, 0.0 if none)}.
  """
  for name, value in (("dense_type", dense_type), ("embed_type", embed_type)):
    if value not in WRITABLE_TYPES:
      raise ValueError(f"write_gguf: {name}={value!r}; expected one of {list(WRITABLE_TYPES)}")
  reader = GGUFModelReader(source_gguf)
  try:
    config = reader.config
    specs = list(reader.global_specs())
    for i in range(config.num_layers):
      specs += reader.layer_specs(i)
    writer = gguf.GGUFWriter(None, reader.metadata["general.architecture"])
    _copy_metadata(reader, writer)
  finally:
    reader.close()
  types: dict[str, int] = {}
  projection_bytes, err_num, err_den, exact_kernels = 0, 0.0, 0.0, 0
  for spec in specs:
    leaf = _leaf_at(params, spec.path)
    params_array = _dense(leaf)
    array = _file_order(params_array, spec)
    if tuple(array.shape) != tuple(spec.file_shape):
      raise ValueError(f"write_gguf: {'/'.join(spec.path)} has shape {array.shape} in file "
                       f"order, the source file's {spec.name} has {spec.file_shape}")
    is_kernel = spec.path[-1] == "kernel" and spec.path[0].startswith("layers_")
    qtype = _chosen_type(leaf, is_kernel, spec.path[0] in ("embed", "lm_head"), dense_type,
                         embed_type)
    scales = _element_scales(leaf, params_array) if qtype in (Q.Q4_0, Q.Q8_0) else None
    packed = None if scales is None else _pack_blocks(
        np.ascontiguousarray(array), np.ascontiguousarray(_file_order(scales, spec)), qtype)
    if packed is not None:
      data, written = packed, qtype
      exact_kernels += 1
    else:
      data, written = _encode(np.ascontiguousarray(array), qtype)
    if written in (Q.F32, Q.F16):
      writer.add_tensor(spec.name, data)
    else:
      writer.add_tensor(spec.name, data, raw_dtype=written)
      if is_kernel:
        back = gguf.quants.dequantize(data, written).reshape(array.shape)
        err_num += float(np.sum((back.astype(np.float64) - array) ** 2))
        err_den += float(np.sum(array.astype(np.float64) ** 2))
    if is_kernel:
      projection_bytes += int(data.nbytes)
    types[written.name] = types.get(written.name, 0) + 1
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)

  def write(handle) -> None:
    # GGUFWriter opens its own files; hand it the atomic writer's temp file instead (one
    # shard, nothing written yet: the state `open_output_file` would have set).
    writer.fout = [handle]
    writer.state = WriterState.EMPTY
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()

  write_file_atomic(path, write)
  return {"file_size": int(path.stat().st_size), "types": types,
          "projection_bytes": projection_bytes, "exact_kernels": exact_kernels,
          "requantization_rel_error": float(np.sqrt(err_num / err_den)) if err_den else 0.0}
