"""Reusable training machinery: optimizer, trainable-subset selection, guarded train step,
checkpointed/resumable loop (used by alignment and Q&A fine-tuning)."""

from penrose_jax.training.checkpointing import TrainCheckpoints
from penrose_jax.training.loop import NonFiniteLossError, TrainingResult, run_training
from penrose_jax.training.metrics_log import TIMING_KEYS, MetricsLog, read_metrics
from penrose_jax.training.optimizer import OptimizerConfig, make_optimizer, make_schedule
from penrose_jax.training.train_state import TrainState, init_train_state, make_train_step
from penrose_jax.training.trainable import (describe_trainable, merge, partition,
                                            trainable_mask)

__all__ = [
    "MetricsLog", "NonFiniteLossError", "OptimizerConfig", "TIMING_KEYS", "TrainCheckpoints",
    "TrainState", "TrainingResult", "describe_trainable", "init_train_state", "make_optimizer",
    "make_schedule", "make_train_step", "merge", "partition", "read_metrics", "run_training",
    "trainable_mask",
]
