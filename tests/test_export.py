"""`export-model` on a run trained in the test session; exported files are run in a separate process
that cannot import the toolkit, only torch / onnxruntime and numpy."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers.commands import run_command
from decltrain.trainer.commands import export
from decltrain.trainer.errors import UserError
from decltrain.trainer.commands import build
from decltrain.trainer.runs.run_folder import RunFolder

# Any import of the toolkit's packages fails in the checking process.
BLOCK_TOOLKIT = "import sys\nfor name in ('trainer', 'models', 'datasets', 'callbacks', 'configs'): sys.modules[name] = None\n"
RUNNERS = {
    "torchscript": "import torch\nmodel = torch.jit.load(sys.argv[1])\n"
                   "outputs = model(torch.from_numpy(data['inputs'])).detach().numpy()\n",
    "onnx": "import onnxruntime\nsession = onnxruntime.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
            "assert isinstance(session.get_inputs()[0].shape[0], str), 'batch dimension is not dynamic'\n"
            "outputs = session.run(None, {'input': data['inputs']})[0]\n",
}
CHECK = "import numpy as np\ndata = np.load(sys.argv[2])\n{runner}print(float(np.abs(outputs - data['expected']).max()))\n"


def _expected(run: Path, data_dir: Path, path: Path) -> Path:
    """Seven test digits (a batch size the export never saw) and the eager model's outputs for them."""
    splits, model, _, _ = build.trained_model(RunFolder.open(str(run), [f"dataset.root={data_dir}"]), "best")
    inputs = torch.stack([splits.test[index][0] for index in range(7)])
    with torch.no_grad():
        np.savez(path, inputs=inputs.numpy(), expected=model(inputs).numpy())
    return path


def _difference_in_fresh_process(fmt: str, exported: Path, expected: Path, cwd: Path) -> float:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    script = BLOCK_TOOLKIT + CHECK.format(runner=RUNNERS[fmt])
    result = subprocess.run([sys.executable, "-I", "-c", script, str(exported), str(expected)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return float(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("fmt, file", [("torchscript", "model.torchscript.pt"), ("onnx", "model.onnx")])
def test_exported_model_matches_the_eager_one_in_a_fresh_process(tiny_run, tmp_path, data_dir, fmt, file):
    result = run_command("export-model", f"run={tiny_run}", f"format={fmt}", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    exported = tiny_run / "export" / file
    assert exported.is_file()
    assert "largest absolute difference to the eager model" in result.stdout
    assert not [p for p in exported.parent.iterdir() if p.name.endswith(".tmp")]
    metadata = json.loads((exported.parent / "model.json").read_text())
    assert metadata["input"]["shape"] == ["batch", 1, 28, 28] and len(metadata["class_names"]) == 10
    assert metadata["files"][fmt] == file
    expected = _expected(tiny_run, data_dir, tmp_path / "expected.npz")
    assert _difference_in_fresh_process(fmt, exported, expected, cwd=tmp_path) < 1e-4


@pytest.mark.slow
def test_a_failing_check_keeps_the_previous_export(tiny_run, data_dir, monkeypatch):
    target = tiny_run / "export" / "model.torchscript.pt"
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(b"previous good export")

    def refuse(*args: object) -> float:
        raise UserError("differs")

    monkeypatch.setattr(export, "verify", refuse)
    config = OmegaConf.create({"run": str(tiny_run), "ckpt": "best", "format": "torchscript", "tolerance": 1e-4})
    with pytest.raises(UserError, match="differs"):
        export.main(config, [f"dataset.root={data_dir}"])
    assert target.read_bytes() == b"previous good export"
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]


def test_verify_refuses_outputs_beyond_the_tolerance():
    model = torch.nn.Linear(3, 2)
    batch = torch.randn(5, 3)
    with torch.no_grad():
        assert export.verify(model, model, batch, 0.0, Path("same.pt")) == 0.0
        with pytest.raises(UserError, match=r"differs from the eager model by up to 0.001 \(tolerance 0.0001\)"):
            export.verify(model, lambda x: model(x) + 1e-3, batch, 1e-4, Path("off.pt"))
        with pytest.raises(UserError, match="the batch size is not dynamic"):
            export.verify(model, lambda x: model(x[:2]), batch, 1e-4, Path("fixed.pt"))


@pytest.mark.parametrize("settings, expected", [
    ({"format": "tflite", "tolerance": 1e-4}, "use format=torchscript or format=onnx"),
    ({"format": "onnx", "tolerance": -1.0}, "must be a non-negative number"),
])
def test_impossible_settings_are_refused_before_any_work(settings, expected):
    with pytest.raises(UserError, match=expected):
        export.main(OmegaConf.create({"run": "anywhere", "ckpt": "best", **settings}), [])
