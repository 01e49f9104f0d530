"""trainer.strategy=fsdp (FSDP2) on CPU with gloo: two real processes against one process on the same samples,
sharded checkpoints (torch.distributed.checkpoint) that resume exactly on two ranks and in one process and
consolidate into one file, and meta-device initialisation."""
from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from torch import nn
from torch.distributed.tensor import DTensor

from decltrain.callbacks import EMA, GradientClipping, ModelCheckpoint
from decltrain.datasets.text_file import generated_text
from decltrain.trainer.commands import consolidate
from decltrain.trainer.engine import checkpoint, shard_writer
from decltrain.trainer.engine.callback import Callback
from decltrain.trainer.engine.loop import Trainer
from decltrain.trainer.engine.settings import TrainerSettings
from decltrain.trainer.tasks.classification import Classification
from decltrain.trainer.errors import Preempted, UserError
from tests.helpers.callbacks import SignalAtStep
from tests.helpers.commands import run_command, run_train, train_command
from tests.helpers.data import synthetic_splits
from tests.helpers.distributed import on_ranks
from tests.helpers.resume import assert_bit_identical
from tests.helpers.trainers import TinyNet, make_trainer


def build(run_dir: Path, batch_size: int, clip: float | None = None, sigterm_at: int | None = None,
          **settings: Any) -> Trainer:
    """A dropout-free net on blobs (260 samples: the last batch is short; 65 val/test samples: shards
    of unequal length), SGD with momentum; `clip`: gradient clipping by global norm; `sigterm_at`:
    each rank sends itself SIGTERM after that optimizer step."""
    torch.manual_seed(0)
    splits = synthetic_splits(n=260, batch_size=batch_size)
    model = TinyNet(splits.num_classes, splits.input_shape, dropout=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    callbacks: dict[str, Callback] = {"model_checkpoint": ModelCheckpoint(monitor="val/acc")}
    if clip is not None:
        callbacks["gradient_clipping"] = GradientClipping(value=clip)
    if sigterm_at is not None:
        callbacks["signal"] = SignalAtStep(sigterm_at)
    settings.setdefault("max_epochs", 2)
    return Trainer(TrainerSettings(accelerator="cpu", **settings), model, splits,
                   Classification(nn.CrossEntropyLoss(), "multiclass", 3), optimizer=optimizer, callbacks=callbacks,
                   run_dir=run_dir)


def whole(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights as whole tensors on every rank (a collective for sharded ones)."""
    return {key: (value.full_tensor() if isinstance(value, DTensor) else value).detach().clone()
            for key, value in state.items()}


def fit(run_dir: Path, ckpt: Path | None = None, **kwargs: Any) -> dict[str, Any]:
    trainer = build(run_dir, **kwargs)
    try:
        trainer.fit(ckpt)
    except Preempted:
        return {"stopped_at": trainer.global_step}
    return {"weights": whole(checkpoint.unwrap(trainer.model).state_dict()), "val": trainer.callback_metrics,
            "test": trainer.test(), "global_step": trainer.global_step}


def reload(run_dir: Path, ckpt: Path, **kwargs: Any) -> dict[str, Any]:
    """The state a Trainer holds after loading `ckpt`, consolidated as a checkpoint holds it."""
    trainer = build(run_dir, **kwargs)
    trainer.load_state_dict(trainer.read_checkpoint(ckpt), str(ckpt))  # sharded: each rank reads its shards
    state = trainer.state_dict()
    return {"model": state["model"], "optimizer": state["optimizer"]}


def on_two_ranks(job: Callable[..., Any], run_dir: Path, **kwargs: Any) -> list[Any]:
    """`job(run_dir, **kwargs)` on two sharded ranks; each rank's result."""
    return on_ranks(job, run_dir, strategy="fsdp", **kwargs)


def assert_same_weights(results: list[dict], expected: dict[str, torch.Tensor]) -> None:
    for result in results:
        for name, value in expected.items():
            torch.testing.assert_close(result["weights"][name], value, rtol=1e-4, atol=1e-5)


def assert_same_state(a: Any, b: Any) -> None:
    """Nested dicts and lists of tensors, equal bit for bit."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_state(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_state(x, y)
    else:
        assert a == b


# Two ranks x two micro-batches of 16 (one reduce-scatter per group), clipped by the norm over both
# shards, train like one process with one clipped batch of 64.
SHARDED = {"batch_size": 16, "accumulate_grad_batches": 2, "clip": 0.5}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    return fit(tmp_path_factory.mktemp("one"), batch_size=64, clip=0.5)


@pytest.fixture(scope="module")
def two_sharded(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The run folder and each rank's result of the SHARDED run."""
    run_dir = tmp_path_factory.mktemp("fsdp")
    return run_dir, on_two_ranks(fit, run_dir, **SHARDED)


@pytest.mark.slow
def test_two_sharded_ranks_accumulating_and_clipping_train_like_one_process(one_process, two_sharded):
    _, two_sharded = two_sharded
    assert [result["global_step"] for result in two_sharded] == [10, 10]
    assert_same_weights(two_sharded, one_process["weights"])
    # 65 evaluation samples: shards of 33 and 32 run 2 and 1 batches; the metrics are those of one process.
    for result in two_sharded:
        for split in ("val", "test"):
            assert result[split] == pytest.approx(one_process[split], abs=1e-5)


@pytest.mark.slow
def test_each_rank_writes_its_shard_beside_the_file_and_they_consolidate_into_one_file(two_sharded, tmp_path):
    sharded_dir, two_sharded = two_sharded
    folder = sharded_dir / "checkpoints"
    small = torch.load(folder / "last.ckpt", weights_only=True)
    assert "model" not in small and "optimizer" not in small and small["progress"]["global_step"] == 10
    assert sorted(path.name for path in (folder / small["shards"]).iterdir()) == [".metadata", "__0_0.distcp",
                                                                                  "__1_0.distcp"]
    # Only the folders the files name are left (last, best and the top-k file share one): the replaced ones are gone.
    named = {torch.load(path, weights_only=True)["shards"] for path in folder.glob("*.ckpt")}
    assert {f"shards/{path.name}" for path in (folder / "shards").iterdir()} == named
    consolidate.main([str(folder / "last.ckpt"), "--output", str(tmp_path / "whole.ckpt"), "--safetensors"])
    whole = torch.load(tmp_path / "whole.ckpt", weights_only=True)
    assert_bit_identical(whole["model"], two_sharded[0]["weights"])
    assert_bit_identical(safetensors.torch.load_file(tmp_path / "whole.safetensors"), two_sharded[0]["weights"])
    assert sorted(whole["optimizer"]["state"]) == list(range(4))  # keyed by position, as in one process
    assert whole["optimizer"]["state"][0]["momentum_buffer"].shape == whole["model"]["net.0.weight"].shape
    assert whole["progress"] == small["progress"] and len(whole["rng_per_rank"]) == 2


def killed(after: Callable[..., Any] | None = None) -> Callable[..., None]:
    """Raises as a kill would (KeyboardInterrupt: no `except Exception` stops it), after calling `after` if given."""
    def kill(*args: Any, **kwargs: Any) -> None:
        if after is not None:
            after(*args, **kwargs)
        raise KeyboardInterrupt
    return kill


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # DCP, saving in one process here
def test_a_save_that_fails_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    """last.ckpt still loads the previous state; the leftovers are removed (hidden folders when a run starts in the
    folder, folders no file names at the next save)."""
    model = nn.Linear(3, 5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    writer, last = shard_writer.ShardWriter(asynchronous=False), tmp_path / "last.ckpt"
    writer.save(model, optimizer, last, step=1, state={"format_version": checkpoint.FORMAT_VERSION, "step": 1})
    before = checkpoint.load(last)
    with torch.no_grad():
        model.weight.add_(1.0)
    # Killed once the shards are written (folder still hidden), then once the folder is renamed (no file yet).
    for owner, name, step in ((shard_writer.dcp, "save", 2), (shard_writer.checkpoint, "save_atomic", 3)):
        with monkeypatch.context() as patch:
            patch.setattr(owner, name, killed(after=shard_writer.dcp.save if step == 2 else None))
            with pytest.raises(KeyboardInterrupt):
                writer.save(model, optimizer, last, step=step, state={"step": step})
    assert_same_state(checkpoint.load(last), before)
    assert sorted(path.name[:7] for path in (tmp_path / "shards").iterdir()) == [".step=2", "step=1-", "step=3-"]
    checkpoint.remove_unfinished_shards(tmp_path)
    checkpoint.remove_unreferenced_shards(tmp_path)
    assert [path.name[:7] for path in (tmp_path / "shards").iterdir()] == ["step=1-"]
    assert_same_state(checkpoint.load(last), before)


@pytest.mark.slow
def test_sigterm_then_resume_on_two_ranks_is_bit_identical(tmp_path, two_sharded):
    """Checkpoints written in the background (async_save) while training went on hold the state of their step."""
    _, two_sharded = two_sharded
    # Ranks agree on a stop at logging steps: every step here. Step 7 is inside the second epoch.
    stopped = on_two_ranks(fit, tmp_path, sigterm_at=7, log_every_n_steps=1, fsdp={"async_save": True}, **SHARDED)
    assert stopped == [{"stopped_at": 7}] * 2
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert checkpoint.load(last)["progress"]["global_step"] == 7
    resumed = on_two_ranks(fit, tmp_path, ckpt=last, fsdp={"async_save": True}, **SHARDED)
    for result in resumed:
        assert result["global_step"] == 10
        assert_bit_identical(result["weights"], two_sharded[0]["weights"])


@pytest.mark.slow
def test_a_sharded_checkpoint_reloads_on_one_rank_and_on_two(tmp_path, two_sharded):
    """Weights and optimizer state, resharded onto one process or onto two ranks, are those written."""
    sharded_dir, _ = two_sharded
    last = sharded_dir / "checkpoints" / "last.ckpt"
    written = checkpoint.load(last)
    assert_same_state(reload(tmp_path, last, batch_size=64), {key: written[key] for key in ("model", "optimizer")})
    rank0, _ = on_two_ranks(reload, tmp_path, ckpt=last, batch_size=32)
    assert_same_state(rank0, {key: written[key] for key in ("model", "optimizer")})


def test_fsdp_in_one_process_trains_the_plain_model(tmp_path):
    trainer = make_trainer(tmp_path, strategy="fsdp", max_epochs=1)
    assert not trainer.placement.shards
    trainer.fit()


def test_unknown_fsdp_settings_are_one_line_errors():
    with pytest.raises(UserError, match="trainer.fsdp.bogus is not a setting"):
        TrainerSettings(strategy="fsdp", fsdp={"bogus": 1})


class SelfInitialised(nn.Sequential):
    initializes_weights_itself = True


def _initial_state(run_dir: Path, meta_init: bool, net: type[nn.Sequential] = nn.Sequential,
                   **settings: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The whole weights and buffers of a sharded net as the Trainer starts it, built on the meta device or not,
    and the RNG state after: linear layers of 32 and 3 rows (shards of 16 + 16 and 2 + 1), batch norm's buffers."""
    torch.manual_seed(0)
    splits = synthetic_splits(n=64, batch_size=16)
    with torch.device("meta") if meta_init else contextlib.nullcontext():
        model = net(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.LayerNorm(32), nn.Linear(32, 3))
    trainer = Trainer(TrainerSettings(accelerator="cpu", fsdp={"meta_init": meta_init}, **settings), model, splits,
                      Classification(nn.CrossEntropyLoss(), "multiclass", 3),
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.1), run_dir=run_dir)
    return whole(checkpoint.unwrap(trainer.model).state_dict()), torch.get_rng_state()


def _at_start(run_dir: Path, **settings: Any) -> dict[str, Any]:
    """The errors of building a sharded run with torch.compile, one with EMA and one on the meta device of a
    model that initialises itself; the initial states of a sharded net built on a device and on the meta device."""
    messages = []
    for attempt in (lambda: build(run_dir, batch_size=32, compile=True, **settings),
                    lambda: make_trainer(run_dir, callbacks={"ema": EMA()}, **settings),
                    lambda: _initial_state(run_dir, meta_init=True, net=SelfInitialised, **settings)):
        with pytest.raises(UserError) as refused:
            attempt()
        messages.append(str(refused.value))
    return {"refusals": messages, "built": _initial_state(run_dir, meta_init=False, **settings),
            "meta": _initial_state(run_dir, meta_init=True, **settings)}


@pytest.mark.slow
def test_what_cannot_run_sharded_is_refused_at_start_and_meta_init_draws_the_same_weights(tmp_path):
    at_start = on_two_ranks(_at_start, tmp_path)[0]
    compiled, ema, self_initialised = at_start["refusals"]
    assert compiled == "trainer.compile with trainer.strategy=fsdp is not supported yet; set trainer.compile=false"
    assert ema.startswith("callbacks.ema needs the whole model on every rank and does not work with "
                          "trainer.strategy=fsdp; remove it (callbacks.ema=null)")
    assert self_initialised.startswith("trainer.fsdp.meta_init=true: model SelfInitialised initialises its weights "
                                       "itself")
    (built, rng_built), (meta, rng_meta) = at_start["built"], at_start["meta"]
    assert_bit_identical(meta, built)  # and the random streams go on from the same state
    assert torch.equal(rng_meta, rng_built)


@pytest.mark.slow
def test_train_gpt_with_fsdp_on_two_devices_then_consolidate_and_evaluate_in_one_process(tmp_path):
    text = generated_text(600, seed=1)
    (tmp_path / "story.txt").write_text(text)
    run_dir = tmp_path / "run"
    result = run_train("config=text_gpt", f"dataset.path={tmp_path / 'story.txt'}", "model.n_layer=1",
                       "model.n_head=2", "model.n_embd=32", "dataset.block_size=32", "dataset.batch_size=16",
                       "trainer.strategy=fsdp", "trainer.devices=2", "trainer.max_epochs=1", f"hydra.run.dir={run_dir}",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    last = run_dir / "checkpoints" / "last.ckpt"
    result = run_train(str(last), "--safetensors", cwd=tmp_path, command=train_command("consolidate-checkpoint"))
    assert result.returncode == 0, result.stdout + result.stderr
    weights = torch.load(run_dir / "checkpoints" / "last-consolidated.ckpt", weights_only=True)["model"]
    assert weights["blocks.0.attention.qkv.weight"].shape == (96, 32)  # whole tensors, plain names
    assert_bit_identical(weights, checkpoint.load(last)["model"])
    assert_bit_identical(safetensors.torch.load_file(run_dir / "checkpoints" / "last-consolidated.safetensors"),
                         weights)
    result = run_command("evaluate", f"run={run_dir}", cwd=tmp_path, data_dir=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = json.loads((run_dir / "metrics.json").read_text())["test"]
    evaluated = json.loads((run_dir / "eval_test.json").read_text())
    for name in ("test/loss", "test/perplexity"):
        assert evaluated[name] == pytest.approx(tested[name], rel=1e-6), name


def test_shard_units_are_named_by_class_innermost_first():
    from decltrain.trainer.engine.sharding import shard_units

    inner = nn.Sequential(nn.Linear(2, 2))
    model = nn.Sequential(nn.Sequential(inner, nn.Linear(2, 2)), nn.ReLU(), nn.Linear(2, 1))
    assert shard_units(model, ["Sequential"]) == [inner, model[0]]
    assert shard_units(model, None) == [model[0], model[2]]  # the default: children that hold parameters
    with pytest.raises(UserError, match="names Block, which model Sequential does not contain; it contains Linear, "
                                        "ReLU, Sequential"):
        shard_units(model, ["Block"])
