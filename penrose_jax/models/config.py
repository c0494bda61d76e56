"""Architecture hyper-parameters of a Llama-family decoder."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Static description of a Llama-family decoder (hashable, usable as a jit static arg).

  Attributes:
    vocab_size: number of token embeddings.
    hidden_size: model width D.
    intermediate_size: SwiGLU inner width F.
    num_layers: number of decoder blocks.
    num_heads: query heads.
    num_kv_heads: key/value heads (grouped-query attention when < num_heads).
    head_dim: per-head width.
    rope_theta: RoPE base frequency.
    rms_norm_eps: epsilon inside RMSNorm.
    tie_embeddings: whether the LM head reuses the token embedding.
    attention_bias: whether q/k/v projections carry a bias (Qwen2-style).
    rope_interleaved: False = HF rotate-half pairs (i, i + d/2); True = GGUF/Meta interleaved
      pairs (2i, 2i + 1). Loaders convert to rotate-half, so this is False unless weights are
      kept in the interleaved order on purpose.
    max_position: context length the checkpoint was trained for.
    bos_token_id, eos_token_id: special token ids (-1 when absent).
    name: free-form model name for reports.
    compressed_matmul: how compressed kernels are applied ('factored' | 'materialize', see
      models.linear.linear): an execution choice, not architecture, kept here because the
      config is the static argument every jitted model function is keyed on.
  """

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-5
  tie_embeddings: bool = True
  attention_bias: bool = False
  rope_interleaved: bool = False
  max_position: int = 2048
  bos_token_id: int = -1
  eos_token_id: int = -1
  name: str = "llama"
  compressed_matmul: str = "factored"

  def __post_init__(self):
    for field in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                  "num_kv_heads", "head_dim"):
      value = getattr(self, field)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"ModelConfig.{field} must be a positive int, got {value!r}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"ModelConfig.num_heads={self.num_heads} must be a multiple of "
                       f"num_kv_heads={self.num_kv_heads}")
    if self.compressed_matmul not in ("factored", "materialize"):
      raise ValueError(f"ModelConfig.compressed_matmul={self.compressed_matmul!r}; expected "
                       "'factored' or 'materialize'")
    if self.head_dim % 2:
      raise ValueError(f"ModelConfig.head_dim={self.head_dim} must be even for RoPE")

  def to_dict(self) -> dict[str, Any]:
    """Returns the config as a JSON-serialisable dict."""
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
    """Builds a config from `to_dict` output; unknown keys raise a clear error.

    Args:
      values: mapping of field name to value.

    Returns:
      The ModelConfig.
    """
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"unknown ModelConfig fields {unknown}; expected a subset of {sorted(known)}")
    return cls(**values)


def tiny_config(**overrides: Any) -> ModelConfig:
  """A tiny config for tests and quick runs (GQA, untied head unless overridden).

  Args:
    **overrides: field values replacing the defaults.

  Returns:
    The ModelConfig.
  """
  values = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                num_kv_heads=2, head_dim=8, rope_theta=10000.0, rms_norm_eps=1e-5,
                tie_embeddings=False, max_position=128, name="tiny")
  values.update(overrides)
  return ModelConfig(**values)
