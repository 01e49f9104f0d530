"""Every config file composes, and the primary config has the groups the README documents."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from decltrain.trainer.commands import console_script

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GROUPS = ["model", "dataset", "loss", "optimizer", "scheduler", "trainer", "callbacks", "logger", "config",
          "hparams_search"]
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONFIGS / group).glob("*.yaml"))]
console_script.register_train_config()  # the schema and the run_dir resolver, as `train` registers them



def compose_train(*overrides: str):
    with initialize_config_module(version_base="1.3", config_module="configs"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_resolves(group, option):
    cfg = compose_train(f"{group}={option}")
    assert cfg.hydra.runtime.choices[group] == option
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_default_experiment_is_mnist_cnn():
    cfg = compose_train()
    assert cfg.hydra.runtime.choices.config == "mnist_cnn"
    assert cfg.model._target_ == "decltrain.models.MnistCNN"
    assert (cfg.optimizer._target_, cfg.optimizer.lr, cfg.dataset.batch_size) == ("torch.optim.Adam", 1e-3, 64)
    assert cfg.optimizer._partial_ and cfg.seed == 42


def test_run_folder_is_per_experiment():
    cfg = compose_train()
    HydraConfig.instance().set_config(cfg)
    assert cfg.hydra.run.dir.startswith("outputs/mnist_cnn/")
    assert cfg.hydra.job.name == "train"


def test_seed_zero_is_kept():
    assert compose_train("seed=0").seed == 0


def test_callbacks_are_an_ordered_named_dict():
    cfg = compose_train("callbacks.early_stopping=null")
    assert list(cfg.callbacks) == ["progress_bar", "model_checkpoint", "early_stopping", "gradient_clipping",
                                   "lr_monitor", "throughput", "model_summary"]
    assert cfg.callbacks.early_stopping is None
