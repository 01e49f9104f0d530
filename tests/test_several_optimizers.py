"""A task with several optimizers (a GAN): the order of the steps, accumulation, one shared loss
scaler, clipping and logging per optimizer, and the config's optimizers checked against the task's."""
from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torch import nn
from torch.nn import functional as F

from decltrain.callbacks import GradientClipping, LearningRateMonitor
from decltrain.models import DCGAN
from decltrain.trainer.commands import build, console_script
from decltrain.trainer.engine import checkpoint
from decltrain.trainer.engine.callback import Callback
from decltrain.trainer.engine.placement import Placement
from decltrain.trainer.engine.settings import TrainerSettings
from decltrain.trainer.errors import UserError
from decltrain.trainer.tasks.classification import Classification
from decltrain.trainer.tasks.gan import GAN
from decltrain.trainer.tracking.loggers import Logger
from tests.helpers.gan import LATENT, adam, gan_trainer

console_script.register_train_config()


def bce(logits: torch.Tensor, label: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))


def test_the_discriminator_steps_then_the_generator_against_it_as_a_hand_written_loop_does(tmp_path):
    trainer = gan_trainer(tmp_path)
    model = checkpoint.unwrap(trainer.model)
    hand = copy.deepcopy(model)
    d_optimizer, g_optimizer = adam(hand.discriminator.parameters()), adam(hand.generator.parameters())
    trainer.train_loader.start_epoch(0, 0)
    batches = [images for images, _ in trainer.train_loader]
    torch.manual_seed(1)
    trainer.fit()
    torch.manual_seed(1)
    for real in batches:  # the DCGAN recipe, as PyTorch's example writes it
        noise = torch.randn(len(real), LATENT)
        with torch.no_grad():
            fake = hand.generator(noise)
        d_optimizer.zero_grad()
        (bce(hand.discriminator(real), 1.0) + bce(hand.discriminator(fake), 0.0)).backward()
        d_optimizer.step()
        g_optimizer.zero_grad()
        bce(hand.discriminator(hand.generator(torch.randn(len(real), LATENT))), 1.0).backward()
        g_optimizer.step()
    assert trainer.global_step == len(batches) == 4
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), hand.state_dict().values()))
    for name, optimizer in (("discriminator", d_optimizer), ("generator", g_optimizer)):
        state = trainer.optimizers[name].state_dict()["state"]
        assert all(torch.equal(state[i]["exp_avg"], value["exp_avg"]) for i, value in optimizer.state_dict()["state"].items())


def adam_steps(optimizer: torch.optim.Optimizer) -> list[int]:
    return [int(state["step"]) for state in optimizer.state.values()]


def test_the_generator_every_k_steps_and_accumulation_counts_each_optimizers_steps(tmp_path):
    every_other = gan_trainer(tmp_path / "every", generator_every=2)
    every_other.fit()
    assert set(adam_steps(every_other.optimizers["discriminator"])) == {4}
    assert set(adam_steps(every_other.optimizers["generator"])) == {2}
    accumulated = gan_trainer(tmp_path / "accumulated", accumulate_grad_batches=2)
    accumulated.fit()
    assert accumulated.global_step == 2
    assert {name: set(adam_steps(optimizer)) for name, optimizer in accumulated.optimizers.items()} == {
        "discriminator": {2}, "generator": {2}}


def test_the_optimizers_share_one_loss_scaler_updated_once_per_step(tmp_path):
    placement = Placement(TrainerSettings(accelerator="cpu"))
    placement.precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)  # fp16's, on the CPU
    trainer = gan_trainer(tmp_path, placement=placement)
    trainer.fit()
    assert trainer.precision.scaler.get_scale() == 2.0 ** (10 + 4)  # grown after each of 4 steps, not each optimizer


class Recorder(Logger):
    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.update(metrics)


class GradientNorms(Callback):
    """Each optimizer's gradient norm where it steps (after clipping, which runs first)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []

    def on_before_optimizer_step(self, trainer: Any) -> None:
        grads = [param.grad for group in trainer.optimizer.param_groups for param in group["params"]]
        self.seen.append((trainer.optimizer_name, float(torch.nn.utils.get_total_norm(grads))))


def test_each_optimizer_is_clipped_and_logged_under_its_name(tmp_path):
    norms, recorder = GradientNorms(), Recorder()
    trainer = gan_trainer(tmp_path, log_every_n_steps=1, loggers={"recorder": recorder},
                          callbacks={"clip": GradientClipping(value=0.01), "lr": LearningRateMonitor(), "norms": norms})
    trainer.fit()
    assert [name for name, _ in norms.seen] == ["discriminator", "generator"] * 4
    assert all(norm <= 0.01 * (1 + 1e-5) for _, norm in norms.seen)
    assert {"train/lr_discriminator", "train/lr_generator", "train/grad_norm_discriminator", "train/grad_norm_generator",
            "train/loss_discriminator", "train/loss_discriminator_real", "train/loss_discriminator_fake",
            "train/loss_generator", "train/loss"} <= recorder.metrics.keys()
    assert recorder.metrics["train/lr_generator"] == pytest.approx(1e-2)
    assert recorder.metrics["train/grad_norm_generator"] > 0.01  # the norm before clipping
    assert recorder.metrics["train/loss"] == pytest.approx(
        recorder.metrics["train/loss_discriminator"] + recorder.metrics["train/loss_generator"])
    assert {"val/d_acc", "val/d_loss", "val/g_loss", "val/mean_image_gap"} <= recorder.metrics.keys()


def test_several_optimizers_refuse_several_processes(tmp_path):
    placement = Placement(TrainerSettings(accelerator="cpu"))
    placement.world_size = 2  # as under DDP: the task calls the networks past DDP's wrapper, unsynchronised
    with pytest.raises(UserError, match=r"^task GAN steps several optimizers \(discriminator, generator\), which runs "
                                        r"in one process only; set trainer.devices=1$"):
        gan_trainer(tmp_path, placement=placement)


def test_a_callback_reading_the_one_optimizer_of_a_run_with_several_is_told_to_read_them_all(tmp_path):
    trainer = gan_trainer(tmp_path)
    with pytest.raises(UserError, match=r"steps several optimizers \(discriminator, generator\).*trainer.optimizers"):
        trainer.optimizer


def test_the_checkpoint_holds_each_optimizers_and_schedules_state_by_name(tmp_path):
    trainer = gan_trainer(tmp_path)
    trainer.fit()
    state = trainer.state_dict()
    assert state["optimizer"].keys() == state["lr_schedule"].keys() == {"discriminator", "generator"}
    resumed = gan_trainer(tmp_path)
    resumed.load_state_dict(state, "test")
    for name, optimizer in resumed.optimizers.items():
        assert set(adam_steps(optimizer)) == {4}, name


def test_a_checkpoint_of_one_optimizer_does_not_resume_a_run_with_several(tmp_path):
    trainer = gan_trainer(tmp_path)
    state = trainer.state_dict()
    state["optimizer"] = state["optimizer"]["generator"]  # as a run with one optimizer writes it
    with pytest.raises(UserError, match=r"^checkpoint one.ckpt holds no state of optimizer.discriminator, only one "
                                        r"optimizer's: resume it with the optimizers it was written with$"):
        trainer.load_state_dict(state, "one.ckpt")


# ------------------------------------------------------------------------- the config's optimizers
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 2e-4}


def optimizers_of(optimizer: dict, task: Any = None) -> Any:
    cfg = OmegaConf.create({"optimizer": optimizer, "task": {"_target_": "decltrain.trainer.tasks.gan.GAN"}})
    return build.optimizers(cfg, DCGAN((1, 8, 8), latent_size=LATENT, width=4), task or GAN(LATENT))


def test_a_task_naming_an_optimizer_the_config_lacks_fails_naming_both():
    with pytest.raises(UserError) as error:
        optimizers_of({"generator": ADAM})
    assert str(error.value) == "task GAN needs optimizer.discriminator; the config has optimizer.generator only"
    with pytest.raises(UserError, match=r"^task GAN needs optimizer.discriminator, optimizer.generator; the config "
                                        r"has one optimizer \(torch.optim.Adam\), not one per name$"):
        optimizers_of(ADAM)
    with pytest.raises(UserError, match=r"^config optimizer.critic: task GAN steps no optimizer of that name"):
        optimizers_of({"generator": ADAM, "discriminator": ADAM, "critic": ADAM})


def test_a_task_with_one_optimizer_refuses_a_config_with_several():
    with pytest.raises(UserError, match=r"names several optimizers \(optimizer.generator\).*here one is stepped: "
                                        r"give optimizer one _target_"):
        optimizers_of({"generator": ADAM}, Classification(nn.CrossEntropyLoss(), "multiclass", 2))


def test_mnist_gan_builds_each_optimizer_over_its_network_with_overrides_by_name():
    with initialize_config_module(version_base="1.3", config_module="configs"):  # as docs/tasks.md writes it
        cfg = compose(config_name="train", overrides=["config=mnist_gan", "optimizer.generator.lr=1e-4",
                                                      "task.generator_every=2"])
    build.check_optimization(cfg)
    model = DCGAN((1, 28, 28), latent_size=cfg.model.latent_size)
    task = build.instantiate_node(cfg.task, "task")
    assert isinstance(task, GAN) and task.optimizers_at(1) == ["discriminator"]
    assert task.optimizers_at(2) == ["discriminator", "generator"]
    optimizers = build.optimizers(cfg, model, task)
    schedules = build.lr_schedules(cfg, optimizers)
    assert isinstance(optimizers, dict) and isinstance(schedules, dict) and schedules.keys() == {"discriminator", "generator"}
    assert optimizers["generator"].param_groups[0]["lr"] == 1e-4
    assert optimizers["discriminator"].param_groups[0]["lr"] == 2e-4
    assert optimizers["generator"].param_groups[0]["params"] == list(model.generator.parameters())


def test_every_evaluation_generates_from_the_same_noise_without_drawing_from_the_training_rng(tmp_path):
    trainer = gan_trainer(tmp_path)
    task = trainer.task
    assert isinstance(task, GAN)
    before = torch.random.get_rng_state()
    first = trainer.evaluate(trainer.val_loader, "val")
    grid = task.grid
    assert trainer.evaluate(trainer.val_loader, "val") == first
    assert grid is not None and torch.equal(task.grid, grid) and grid.dtype == torch.uint8
    assert torch.equal(torch.random.get_rng_state(), before)
    assert 0.0 <= first["val/d_acc"] <= 1.0 and first["val/mean_image_gap"] > 0


def test_each_optimizer_gets_the_scheduler_groups_schedule_or_its_own_by_name():
    cfg = OmegaConf.create({"scheduler": {
        "lr_scheduler": None, "interval": "epoch", "monitor": None, "warmup_steps": 0,
        "generator": {"lr_scheduler": {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 1},
                      "interval": "step"}}})
    model = DCGAN((1, 8, 8), latent_size=LATENT, width=4)
    schedules = build.lr_schedules(cfg, {"discriminator": adam(model.discriminator.parameters()),
                                         "generator": adam(model.generator.parameters())})
    assert isinstance(schedules, dict)
    assert schedules["discriminator"].scheduler is None and schedules["discriminator"].interval == "epoch"
    assert isinstance(schedules["generator"].scheduler, torch.optim.lr_scheduler.StepLR)
    assert schedules["generator"].interval == "step"


class NonFiniteGeneratorAt(GAN):
    """The generator's loss is NaN at optimizer step `step`."""

    def __init__(self, step: int) -> None:
        super().__init__(LATENT)
        self.step, self.calls = step, 0

    def optimizer_loss(self, model: nn.Module, batch: Any, name: str) -> Any:
        loss = super().optimizer_loss(model, batch, name)
        if name == "generator":
            self.calls += 1
            return loss * float("nan") if self.calls == self.step else loss
        return loss


def test_skip_drops_the_step_of_the_optimizer_whose_loss_was_not_finite_only(tmp_path):
    trainer = gan_trainer(tmp_path, task=NonFiniteGeneratorAt(2), nonfinite_loss="skip")
    trainer.fit()
    assert trainer.global_step == 4
    assert set(adam_steps(trainer.optimizers["discriminator"])) == {4}
    assert set(adam_steps(trainer.optimizers["generator"])) == {3}
    assert all(torch.isfinite(value).all() for value in checkpoint.unwrap(trainer.model).state_dict().values())
