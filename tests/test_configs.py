"""Every config file composes, and the primary config has the groups the README documents."""
from __future__ import annotations

from pathlib import Path

import pytest
from dataclasses import asdict

from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, open_dict

from decltrain.trainer.commands import build, console_script, schema
from decltrain.trainer.engine.settings import TrainerSettings

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GROUPS = ["model", "dataset", "loss", "optimizer", "scheduler", "callbacks", "logger", "config", "hparams_search"]
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


def test_the_trainer_schema_has_the_settings_keys_and_defaults():
    """`trainer.*` is TrainerSettings less the top-level `seed`, with the same defaults."""
    settings = asdict(TrainerSettings())
    assert OmegaConf.to_container(OmegaConf.structured(schema.TrainerSchema), enum_to_str=True) == \
        {key: value for key, value in settings.items() if key != "seed"}
    assert compose_train().seed == settings["seed"]


@pytest.mark.parametrize(("value", "expected"), [("0.5", 0.5), ("20", 20), ("null", None)])
def test_val_check_interval_takes_a_fraction_or_a_number_of_steps_from_the_command_line(value, expected):
    cfg = compose_train(f"trainer.val_check_interval={value}")
    interval = build.trainer_settings(cfg).val_check_interval
    assert interval == expected and type(interval) is type(expected)


@pytest.mark.parametrize(("override", "expected"), [
    ("trainer.max_epochs=abc", "Value 'abc' of type 'str' could not be converted to Integer\n    full_key: trainer.max_epochs"),
    ("trainer.accelerator=gpu", "Invalid value 'gpu', expected one of [auto, cpu, cuda]\n    full_key: trainer.accelerator"),
    ("trainer.max_epoch=3", "Key 'max_epoch' not in 'TrainerSchema'"),
])
def test_a_wrong_trainer_setting_fails_at_composition_naming_the_key(override, expected):
    with pytest.raises(ConfigCompositionException) as failure:
        compose_train(override)
    assert expected in str(failure.value.__cause__ or failure.value)


def test_the_segmentation_experiment_takes_the_torchvision_model_its_header_offers():
    model = compose_train("config=segmentation_folder", "model=torchvision_segmentation").model
    assert set(model) == {"_target_", "name", "weights"}  # no U-Net setting left over to break its constructor
