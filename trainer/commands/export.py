"""`export-model run=<run folder> format=torchscript|onnx`: a deployable model in `<run>/export/`.

The file is written beside its final name first, loaded back with its own runtime (torch.jit /
onnxruntime) and compared with the eager model on a real test batch of another size than the
export example, which also proves the batch dimension is dynamic. Only a file within tolerance
replaces `<run>/export/model.*`; a failing one is deleted, so an earlier good export survives.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from decltrain.datasets.base import DataSplits
from decltrain.trainer.engine import checkpoint, data
from decltrain.trainer.engine.task import Task
from decltrain.trainer.commands import build, inference_record
from decltrain.trainer.errors import UserError
from decltrain.trainer.runs import layout
from decltrain.trainer.runs.run_folder import RunFolder

FILES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
INPUT_NAME, OUTPUT_NAME = "input", "output"
EXAMPLE_SIZE = 2  # export example batch; the check batch is larger, so a fixed batch size fails it
# The exporter's graph passes log each step at INFO, which would bury the result line.
CHATTY_LOGGERS = ("onnxscript", "onnx_ir")
Runner = Callable[[torch.Tensor], torch.Tensor]


def main(cfg: DictConfig, overrides: list[str]) -> float:
    if cfg.format not in FILES:
        raise UserError(f"format={cfg.format} is not supported; use format=torchscript or format=onnx")
    if not cfg.tolerance >= 0:
        raise UserError(f"tolerance={cfg.tolerance} must be a non-negative number, e.g. tolerance=1e-4")
    run = RunFolder.open(cfg.run, overrides)
    splits, model, task, ckpt = build.trained_model(run, cfg.ckpt,
                                                    data_needed=inference_record.data_overridden(overrides))
    batch = check_batch(splits, task)
    target = run.path / layout.EXPORT / FILES[cfg.format]
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = checkpoint.temporary_sibling(target)
    try:
        runner = (torchscript if cfg.format == "torchscript" else onnx)(model.cpu(), batch[:EXAMPLE_SIZE], staged)
        difference = verify(model, runner, batch, cfg.tolerance, target)
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)
    write_metadata(target.parent, splits, ckpt, batch)
    print(f"wrote {target}: largest absolute difference to the eager model {difference:.3g} "
          f"on {len(batch)} test samples (tolerance {cfg.tolerance:g})")
    return difference


def check_batch(splits: DataSplits, task: Task) -> torch.Tensor:
    """The model's inputs (as the task picks them) in the first batch of the test split, as the
    run's evaluation loader builds it."""
    inputs = task.model_inputs(next(iter(data.eval_loader(splits.test, splits.loader, torch.device("cpu")))))
    if not isinstance(inputs, torch.Tensor):
        raise UserError(f"export-model traces models called with one tensor; the model of task "
                        f"{type(task).__name__} is called with a {type(inputs).__name__}")
    if len(inputs) <= EXAMPLE_SIZE:
        raise UserError(f"the test split gives a batch of {len(inputs)} samples; the export check needs more "
                        f"than {EXAMPLE_SIZE}: raise dataset.eval_batch_size")
    return inputs


def dynamic_dims(example: torch.Tensor) -> dict[int, str]:
    """Batch is always dynamic; token-id inputs (integers) also have a dynamic length."""
    return {0: "batch"} if example.is_floating_point() else {0: "batch", 1: "length"}


def torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> Runner:
    """Traces `model` (any batch size: no op in these models fixes it), saves and reloads it."""
    # TorchScript is deprecated in favour of torch.export, yet still what C++ and mobile runtimes
    # load; the format was asked for explicitly, so its deprecation notices are not shown.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        try:
            traced = torch.jit.trace(model, example)
        except RuntimeError as err:
            raise UserError(f"format=torchscript: tracing {type(model).__name__} failed ({_reason(err)}); "
                            "try format=onnx, or change the model's forward") from err
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path))
    return lambda inputs: loaded(inputs)


def onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Runner:
    """torch.export-based ONNX export with symbolic dims, checked through onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError("format=onnx needs onnx, onnxscript and onnxruntime: pip install -e \".[export]\"") from None
    dims = {index: torch.export.Dim(name) for index, name in dynamic_dims(example).items()}
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False, verbose=False,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=(dims,))
    except ImportError as err:
        raise UserError(f"format=onnx needs onnx and onnxscript ({err}): pip install -e \".[export]\"") from None
    except torch.onnx.OnnxExporterError as err:
        raise UserError(f"format=onnx: torch.onnx cannot export {type(model).__name__} ({_reason(err)}); "
                        "use format=torchscript, or change the model's forward") from err
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda inputs: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: inputs.numpy()})[0])


@torch.no_grad()
def verify(model: nn.Module, runner: Runner, batch: torch.Tensor, tolerance: float, target: Path) -> float:
    """The largest absolute output difference; above `tolerance` the export is refused."""
    outputs = model.eval()(batch)
    if not isinstance(outputs, torch.Tensor):
        raise UserError(f"export-model exports models whose output is one tensor; {type(model).__name__} returns "
                        f"a {type(outputs).__name__}")
    expected = outputs.float()
    actual = runner(batch).float()
    if actual.shape != expected.shape:
        raise UserError(f"the exported {target.name} gives outputs of shape {tuple(actual.shape)} for a batch "
                        f"of {len(batch)}, the model {tuple(expected.shape)}: the batch size is not dynamic")
    difference = float((actual - expected).abs().max())
    if not np.isfinite(difference) or difference > tolerance:
        raise UserError(f"the exported {target.name} differs from the eager model by up to {difference:.3g} "
                        f"(tolerance {tolerance:g}); not written. Raise tolerance=... only if that is acceptable")
    return difference


def _reason(err: BaseException) -> str:
    """The first line of the root cause: exporters wrap it in pages of advice."""
    while err.__cause__ is not None:
        err = err.__cause__
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def write_metadata(folder: Path, splits: DataSplits, ckpt: Path, batch: torch.Tensor) -> None:
    """What a deployment needs beside the file: input layout, class names, where the weights came from."""
    dims = dynamic_dims(batch)
    shape = [dims.get(index, size) for index, size in enumerate([len(batch), *splits.input_shape])]
    (folder / "model.json").write_text(json.dumps({
        "input": {"name": INPUT_NAME, "shape": shape}, "output": OUTPUT_NAME, "task": splits.task,
        "class_names": splits.class_names, "checkpoint": str(ckpt.resolve()),
        "files": {name: file for name, file in FILES.items() if (folder / file).is_file()},
    }, indent=2) + "\n")
