"""Mixed precision, gradient scaling and torch.compile on CPU."""
from __future__ import annotations

import pytest
import torch

from decltrain.trainer.engine.callback import Callback
from decltrain.callbacks.gradient_clipping import total_norm
from tests.helpers.trainers import TinyNet, make_trainer
from decltrain.trainer.engine import checkpoint
from decltrain.trainer.errors import UserError
from decltrain.trainer.engine.precision import Precision


class GradNorms(Callback):
    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer) -> None:
        self.norms.append(float(total_norm([p for p in trainer.model.parameters() if p.grad is not None])))


def test_fp16_on_cpu_is_an_error_that_suggests_bf16():
    with pytest.raises(UserError, match="trainer.precision=bf16-mixed"):
        Precision("16-mixed", torch.device("cpu"))
    with pytest.raises(UserError, match="one of 32, 16-mixed, bf16-mixed"):
        Precision("8-mixed", torch.device("cpu"))


def test_bf16_mixed_runs_the_forward_in_bf16_and_learns(tmp_path):
    trainer = make_trainer(tmp_path, precision="bf16-mixed", max_epochs=4)
    dtypes = []
    trainer.model.net[0].register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    trainer.fit()
    assert set(dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # weights stay fp32
    assert trainer.callback_metrics["val/acc"] > 0.9


def test_scaled_gradients_are_unscaled_before_callbacks_and_the_scaler_is_checkpointed(tmp_path):
    """A GradScaler multiplies the loss by 1024; clipping must still see the true gradients."""
    plain, scaled = GradNorms(), GradNorms()
    make_trainer(tmp_path / "plain", callbacks={"norms": plain}, max_epochs=1, limit_train_batches=3).fit()
    trainer = make_trainer(tmp_path / "scaled", callbacks={"norms": scaled}, max_epochs=1, limit_train_batches=3)
    trainer.precision.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)
    trainer.fit()
    assert scaled.norms == pytest.approx(plain.norms, rel=1e-4)
    trainer.save_checkpoint(tmp_path / "scaled.ckpt")
    state = checkpoint.load(tmp_path / "scaled.ckpt")
    assert state["precision"]["scaler"]["scale"] == 1024.0 * 2**3  # grown after each of 3 clean steps
    fresh = make_trainer(tmp_path / "fresh", max_epochs=1)
    fresh.precision.scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    fresh.load_state_dict(state, "scaled.ckpt")
    assert fresh.precision.scaler.get_scale() == 1024.0 * 2**3


@pytest.mark.slow
def test_compiled_model_learns_and_saves_plain_names_that_load_uncompiled(tmp_path):
    trainer = make_trainer(tmp_path, compile=True, max_epochs=3)
    assert trainer.model is not checkpoint.unwrap(trainer.model)  # really wrapped by torch.compile
    trainer.fit()
    assert trainer.callback_metrics["val/acc"] > 0.9
    trainer.save_checkpoint(tmp_path / "compiled.ckpt")
    weights = checkpoint.load(tmp_path / "compiled.ckpt")["model"]
    assert not any("_orig_mod" in key for key in weights)
    plain = TinyNet()
    plain.load_state_dict(weights)  # strict: every name matches an uncompiled model
    inputs = torch.randn(5, 8)
    trainer.model.eval()
    torch.testing.assert_close(plain.eval()(inputs), trainer.model(inputs), rtol=1e-4, atol=1e-5)
