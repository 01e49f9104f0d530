"""Every command in the shell blocks of README.md and docs/*.md runs as written, from an empty folder.

Each documented command is listed in COMMANDS: either run (with shorteners appended, nothing else
changed) or excluded with the reason it cannot run here. A command the list does not know, in any
document, fails `test_every_documented_command_is_listed`: add it to COMMANDS.

The commands run in reading order (README.md, then docs/ in `tests.helpers.readme.DOCS_ORDER`) in one
working directory with DATA_DIR set, as a user following the documentation would: placeholders
for a run folder (`outputs/mnist_cnn/<timestamp>`, or a written-out timestamp) become the newest
run folder of that experiment an earlier command made there.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.helpers import readme
from tests.helpers.commands import train_command


@dataclass(frozen=True)
class Run:
    """Run the command with `append` (shorteners only: fewer epochs and batches) added at its end."""
    append: str = ("trainer.max_epochs=1 trainer.limit_train_batches=2 trainer.limit_val_batches=2 "
                   "trainer.limit_test_batches=2")


@dataclass(frozen=True)
class Excluded:
    reason: str


AS_IS = Run(append="")
SHORT = Run()
# A search of two trials (hydra.sweeper.n_trials: fewer trials, like fewer epochs), each shortened.
SEARCH = Run(append=f"hydra.sweeper.n_trials=2 {SHORT.append}")
SLURM = Excluded("needs a SLURM cluster; tests/test_requeue.py runs the same launcher through submitit's "
                 "local executor (signals, checkpoint, requeue)")

COMMANDS: dict[str, Run | Excluded] = {
    "python3 -m venv .venv && . .venv/bin/activate": Excluded("set-up: .ci/run runs it in a fresh environment"),
    'pip install torch==2.14.1 torchvision==0.29.1 && pip install -e ".[dev,slurm,export,mlflow,wandb,optuna,bench,timm,detection,text,hf,shards]"':
        Excluded("set-up: .ci/run runs it in a fresh environment"),
    "train config=mnist_cnn": SHORT,
    "train config=mnist_cnn optimizer.lr=3e-4 trainer.max_epochs=20": SHORT,
    "train config=mnist_cnn optimizer=sgd scheduler=cosine scheduler.warmup_steps=100": SHORT,
    "train config=mnist_cnn callbacks.early_stopping=null": SHORT,
    "train config=mnist_cnn trainer.fast_dev_run=true": AS_IS,
    "train -m config=mnist_cnn optimizer.lr=1e-3,1e-2": SHORT,
    "train config=mnist_cnn --cfg job": AS_IS,
    "train config=mnist_cnn print_config=full": SHORT,
    "train --help": AS_IS,
    "runs": AS_IS,
    "runs ls --experiment mnist_cnn --status done --since 2d optimizer.lr=1e-3 --sort val/acc": AS_IS,
    "runs ls --json": AS_IS,
    "runs show outputs/mnist_cnn/<timestamp>": AS_IS,
    "runs diff outputs/mnist_cnn/<timestamp> outputs/mnist_cnn/<timestamp>": AS_IS,
    "runs best mnist_cnn": AS_IS,
    "train resume=outputs/mnist_cnn/2026-11-22_10-00-00": SHORT,
    "train rerun=outputs/mnist_cnn/2026-11-22_10-00-00 seed=7": SHORT,
    'eval "$(train -sc install=bash)"': AS_IS,
    "DATA_DIR=../shared/data train config=mnist_cnn trainer.max_epochs=3": SHORT,
    "train -m config=mnist_cnn,mnist_mlp": SHORT,
    "train config=mnist_cnn logger=[tensorboard,csv,mlflow]": SHORT,
    "train config=mnist_cnn logger=wandb": SHORT,
    "train config=mnist_cnn logger=none": SHORT,
    "train -m hparams_search=mnist_optuna": SEARCH,
    "train -m hparams_search=mnist_optuna hydra.sweeper.n_trials=6 trainer.max_epochs=3": SEARCH,
    "train -m hparams_search=mnist_optuna optimizer.lr=1e-3": SEARCH,
    "train -m hparams_search=mnist_optuna hydra.sweep.dir=outputs/multirun/<timestamp>": SEARCH,
    "train config=imagefolder_resnet18 dataset.root=my_images model.weights=resnet18.pth": SHORT,
    "train config=coco_detection dataset.fake=true trainer.max_epochs=1":
        Excluded("tests/test_detection.py runs it from a user's folder, on smaller images (a detector is slow on a CPU)"),
    "train config=segmentation_folder dataset.fake=true": SHORT,
    'train config=mnist_cnn dataset=hf dataset.path=parquet "dataset.data_files={train: mnist/train.parquet, '
    'test: mnist/test.parquet}" "dataset.mean=[0.1307]" "dataset.std=[0.3081]"':
        Excluded("needs the MNIST subset as parquet; tests/test_hf_dataset.py writes it and runs this command"),
    "make-shards my_images shards/": Excluded("needs an image folder; tests/test_shards.py makes one and runs it"),
    "train dataset=shards dataset.path=shards/ model=torchvision":
        Excluded("needs shards; tests/test_shards.py trains on shards from make-shards"),
    "python scripts/shards_benchmark.py --images 600 --rounds 3":
        Excluded("a benchmark of several minutes; its figures are in docs/large-data.md"),
    "evaluate run=outputs/mnist_cnn/<timestamp>": AS_IS,
    "predict run=outputs/mnist_cnn/<timestamp> inputs=digits/": AS_IS,
    "export-model run=outputs/mnist_cnn/<timestamp> format=torchscript": AS_IS,
    "train config=mnist_cnn resume=outputs/mnist_cnn/2026-11-22_10-00-00/checkpoints/last.ckpt": SHORT,
    "train config=mnist_cnn resume=latest": SHORT,
    "train config=mnist_cnn hydra.run.dir=runs/a resume=auto": SHORT,
    "train --config-dir configs --help": AS_IS,
    "train --config-dir configs config=my_exp": Run(append="trainer.max_epochs=1"),
    "train --config-dir configs config=my_exp model.hidden=128 callbacks.print_accuracy=null":
        Run(append="trainer.max_epochs=1"),
    "evaluate run=outputs/my_exp/<timestamp>": AS_IS,
    "train --config-dir configs config=autoencoder": SHORT,
    "predict run=outputs/autoencoder/<timestamp> inputs=digits": AS_IS,
    "train config=text_gpt dataset.path=input.txt": SHORT,
    "train config=text_gpt dataset.path=texts/ dataset.tokenizer=bpe": SHORT,
    'predict run=outputs/text_gpt/<timestamp> prompt="ROMEO:" max_new_tokens=200 temperature=0.8 top_k=40': AS_IS,
    "train config=mnist_gan": Excluded("tests/test_gan.py runs it shortened (the time budget of the slow tests)"),
    "train config=mnist_gan optimizer.generator.lr=1e-4 task.generator_every=2":
        Excluded("tests/test_several_optimizers.py composes these overrides and steps the generator every other step"),
    "predict run=outputs/mnist_gan/<timestamp> num_samples=64":
        Excluded("tests/test_gan.py runs it on its shortened mnist_gan run"),
    "train config=text_gpt model=hf_causal_lm task=model_loss dataset.path=input.txt":
        Excluded("tests/test_hf_causal_lm.py runs it, smaller, on a generated text"),
    "train config=text_gpt model=hf_causal_lm task=model_loss dataset.path=input.txt model.path=my_gpt2":
        Excluded("needs a model folder; tests/test_hf_causal_lm.py builds the model from one it saves"),
    "train config=mnist_vae": Excluded("tests/test_reconstruction.py runs it on the MNIST subset"),
    "predict run=outputs/mnist_vae/<timestamp> inputs=digits":
        Excluded("tests/test_reconstruction.py runs it on the run it trains"),
    "train config=mnist_cnn 'callbacks=[default,ema]'": SHORT,
    "train config=mnist_cnn 'callbacks=[default,swa]' callbacks.swa.swa_lr=1e-4": SHORT,
    "train config=mnist_cnn trainer.val_check_interval=20": SHORT,
    "train config=mnist_cnn trainer.val_check_interval=0.5": SHORT,
    "train config=mnist_cnn trainer.max_time=00:02:00:00": SHORT,
    "find-lr config=mnist_cnn": Run(append="lr_find.num_steps=20"),
    "train config=mnist_cnn trainer.max_steps=30 trainer.profiler=simple": SHORT,
    "train debug=fdr": AS_IS,
    "train config=mnist_cnn trainer.precision=bf16-mixed": SHORT,
    "train config=mnist_cnn trainer.precision=16-mixed trainer.accelerator=cuda":
        SHORT if torch.cuda.is_available() else Excluded("needs a CUDA device"),
    "train config=mnist_cnn trainer.compile=true": SHORT,
    "train config=mnist_cnn trainer.compile=reduce-overhead":
        Excluded("its CUDA graphs need a GPU (tests/test_cuda.py); on a CPU it compiles as trainer.compile=true, "
                 "which runs here, and the mode is checked by tests/test_cuda.py's CPU tests"),
    "train config=mnist_cnn trainer.accumulate_grad_batches=4": SHORT,
    "train config=mnist_cnn trainer.devices=2": SHORT,
    "train config=mnist_cnn trainer.strategy=fsdp trainer.devices=2":
        Excluded("tests/test_fsdp.py trains text_gpt so (shortened), consolidates and evaluates it in one process"),
    "train config=text_gpt dataset.path=input.txt trainer.strategy=fsdp trainer.devices=2 trainer.fsdp.async_save=true":
        Excluded("tests/test_fsdp.py trains text_gpt sharded on two processes and resumes asynchronous checkpoints "
                 "bit for bit"),
    "consolidate-checkpoint outputs/mnist_cnn/<timestamp>": AS_IS,
    "consolidate-checkpoint outputs/mnist_cnn/<timestamp>/checkpoints/best.ckpt --safetensors --output model.ckpt":
        AS_IS,
    "train config=mnist_mlp trainer.strategy=fsdp trainer.devices=8 'trainer.fsdp.shard_modules=[Sequential]' "
    "trainer.fsdp.activation_checkpointing=true trainer.precision=bf16-mixed":
        Excluded("starts 8 processes; tests/test_fsdp.py trains sharded on two"),
    "train -m config=mnist_cnn optimizer.lr=1e-3,3e-4,1e-4,3e-5 hydra/launcher=parallel hydra.launcher.n_jobs=4":
        Excluded("tests/test_sweeps.py runs such a sweep of 4 jobs with n_jobs=2 and a sequential one"),
    "train -m hparams_search=mnist_optuna hydra/launcher=parallel hydra.launcher.n_jobs=2": SEARCH,
    "find-batch-size config=mnist_cnn":
        Excluded("tries sizes up to the training set's; tests/test_find_batch_size.py runs it up to 48"),
    "train config=mnist_cnn trainer.strategy=ddp trainer.devices=4 trainer.sync_batchnorm=true":
        Excluded("needs 4 CUDA devices (SyncBatchNorm has no CPU kernel)"),
    "torchrun --standalone --nproc_per_node=2 --no-python train config=mnist_cnn": SHORT,
    "torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=node0:29500 --rdzv-id=myjob "
    "--no-python train config=mnist_cnn": Excluded("needs two nodes"),
    "train -m hydra/launcher=slurm hydra.launcher.partition=gpu trainer.devices=4 config=mnist_cnn": SLURM,
    "train -m hydra/launcher=slurm trainer.devices=2 optimizer.lr=1e-3,3e-4": SLURM,
    "DATA_DIR=../shared/data python scripts/benchmark.py": Excluded("the full benchmark takes about 15 minutes"),
    "DATA_DIR=../shared/data python scripts/benchmark.py --quick":
        Excluded("runs from the repository root; tests/test_benchmark_script.py runs it"),
    "DATA_DIR=../shared/data python -m pytest -q": Excluded("the test suite itself"),
    'python -m pytest -m "not slow" -q': Excluded("the test suite itself (its fast tier)"),
    "DATA_DIR=../shared/data python -m pytest -q -m cuda":
        Excluded("the test suite itself (its CUDA tests, collected and skipped with their reason here)"),
    "DATA_DIR=../shared/data python scripts/benchmark.py --device cuda": Excluded("needs a CUDA device"),
    "python scripts/typecheck.py": Excluded("runs from the repository root; tests/test_types.py runs it"),
    "DATA_DIR=../shared/data python scripts/benchmark.py --mode device --device cpu --quick":
        Excluded("runs from the repository root and takes minutes; tests/test_benchmark_script.py runs its "
                 "measurements on a tiny job"),
}

PLACEHOLDER = re.compile(r"outputs/(\w+)/(<timestamp>|\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d)")


def test_every_document_is_read():
    """A new file in docs/ needs its place in the reading order, or its commands would go untested."""
    found = sorted(path.name for path in readme.DOCS.glob("*.md"))
    assert found == sorted(readme.DOCS_ORDER), "add each file of docs/ to tests/helpers/readme.py's DOCS_ORDER"


def test_every_documented_command_is_listed():
    commands = readme.shell_commands()
    unknown = [f"{document}: {command}" for document, command in commands if command not in COMMANDS]
    assert not unknown, ("documented commands unknown to tests/test_readme.py; add each to COMMANDS as Run(...) "
                         "(appended shorteners only) or Excluded('why it cannot run here'):\n" + "\n".join(unknown))
    documented = {command for _, command in commands}
    stale = [command for command in COMMANDS if command not in documented]
    assert not stale, "COMMANDS lists commands no document has any more; remove them:\n" + "\n".join(stale)


def test_documentation_links_resolve():
    """Relative links between README.md and docs/ name a file that exists and, in a document, a heading."""
    broken = []
    for document in readme.documents():
        for target in readme.relative_links(document.read_text()):
            path, _, anchor = target.partition("#")
            linked = (document.parent / path).resolve() if path else document
            if not linked.exists():
                broken.append(f"{document.relative_to(readme.ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in readme.anchors(linked.read_text()):
                broken.append(f"{document.relative_to(readme.ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def prepare(work: Path, data_dir: Path) -> None:
    """What the documents ask the user to have: the data at ../shared/data, images, a weights file, the example."""
    (work.parent / "shared").mkdir()
    (work.parent / "shared" / "data").symlink_to(data_dir)
    for split in ("train", "val"):
        for name, shade in (("cat", 40), ("dog", 210)):
            folder = work / "my_images" / split / name
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (32, 32), (shade + i,) * 3).save(folder / f"{i:03d}.png")
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), work / "resnet18.pth")
    (work / "digits").mkdir()
    for i in range(2):
        Image.new("L", (28, 28), 40 * i).save(work / "digits" / f"{i}.png")
    from decltrain.datasets.text_file import generated_text

    (work / "input.txt").write_text(generated_text(400))
    (work / "texts").mkdir()
    for part in range(2):
        (work / "texts" / f"part{part}.txt").write_text(generated_text(200, seed=part))
    readme.write_example_files(work)


def with_run_folders(command: str, work: Path) -> str:
    """The command with each run-folder placeholder replaced by the newest such folder in `work`."""
    def newest(match: re.Match) -> str:
        runs = sorted(folder for folder in (work / "outputs" / match[1]).glob("*")
                      if (folder / "checkpoints" / "last.ckpt").is_file() or (folder / "multirun.yaml").is_file())
        assert runs, f"no run of {match[1]} with a checkpoint before `{command}`: order the documents or COMMANDS"
        return str(runs[-1].relative_to(work))
    return PLACEHOLDER.sub(newest, command)


@pytest.mark.slow
def test_documented_commands_run_as_written(tmp_path, data_dir):
    work = tmp_path / "work"
    work.mkdir()
    prepare(work, data_dir)
    bin_dir = str(Path(train_command()).parent)
    # No network here: W&B runs offline, as docs/tracking.md says to do without one.
    env = {**os.environ, "DATA_DIR": str(data_dir), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "COLUMNS": "200", "WANDB_MODE": "offline"}
    failures = []
    ran = set()
    for _, command in readme.shell_commands():
        how = COMMANDS.get(command)
        if not isinstance(how, Run) or command in ran:
            continue
        ran.add(command)
        full = f"{with_run_folders(command, work)} {how.append}".strip()
        result = subprocess.run(["bash", "-c", full], cwd=work, env=env, capture_output=True, text=True,
                                timeout=600)
        if result.returncode != 0:
            failures.append(f"$ {full}\nexit {result.returncode}\n{(result.stdout + result.stderr)[-2000:]}")
    assert not failures, "\n\n".join(failures)
