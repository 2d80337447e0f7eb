"""Adversarial training of any adapter method: ``train(config, out, resume=False) -> TrainResult``.

``RunConfig`` (model, data, adapter, attack, train, eval) is read from YAML with dotted overrides by
``load_run_config``; the run folder receives ``config.yaml``, ``manifest.json``, ``history.csv``, ``epochs.csv``,
``tb/``, ``checkpoints/``, ``adapter/``, ``metrics.json`` and ``efficiency.json``.
"""
from advlora.training.config import (
                                     AttackConfig,
                                     DataConfig,
                                     EvalConfig,
                                     ModelConfig,
                                     RunConfig,
                                     TrainConfig,
                                     load_run_config,
)
from advlora.training.trainer import TrainResult, train

__all__ = ["AttackConfig", "DataConfig", "EvalConfig", "ModelConfig", "RunConfig", "TrainConfig", "TrainResult",
           "load_run_config", "train"]
