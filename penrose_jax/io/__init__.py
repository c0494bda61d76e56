"""penrose_jax.io: reading models (GGUF, Hugging Face), tokenizers, exports and checkpoints.

  load_model(path) -> LoadedModel(config, params, tokenizer)     whole model
  open_model(path) -> ModelReader                                 one layer at a time
  export_hf(directory, config, params, tokenizer)                 HF safetensors directory
  save_params / restore_params                                    orbax checkpoints with
                                                                  compressed leaves
"""

from penrose_jax.io.checkpoint import register_leaf_type, restore_params, save_params
from penrose_jax.io.errors import CheckpointFormatError
from penrose_jax.io.gguf_reader import find_default_gguf
from penrose_jax.io.hf_checkpoint import export_hf
from penrose_jax.io.model_reader import LoadedModel, load_model, open_model
from penrose_jax.io.reader_base import ModelReader
from penrose_jax.io.tokenizer import TextTokenizer

__all__ = [
    "CheckpointFormatError", "LoadedModel", "ModelReader", "TextTokenizer", "export_hf",
    "find_default_gguf", "load_model", "open_model", "register_leaf_type", "restore_params",
    "save_params",
]
