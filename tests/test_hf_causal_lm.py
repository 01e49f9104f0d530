"""model=hf_causal_lm: a Hugging Face causal language model, from a config or a local folder, trained by task=model_loss."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from omegaconf import OmegaConf
from torch.nn import functional as F

from decltrain.datasets import text_file
from decltrain.datasets.text_file import generated_text
from decltrain.models import HFCausalLM
from decltrain.trainer.commands import build
from decltrain.trainer.errors import UserError
from tests.helpers.commands import run_train
from tests.helpers.text import unigram_loss

pytest.importorskip("transformers")

TINY = {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16, "n_positions": 8,
        "bos_token_id": None, "eos_token_id": None}


def fake_text_splits():
    return text_file.build("unused", block_size=8, fake=True, batch_size=4)


def test_built_from_a_config_it_takes_the_datasets_vocabulary_and_scores_every_next_token():
    splits = fake_text_splits()
    model = build.model(OmegaConf.create({"model": {"_target_": "decltrain.models.HFCausalLM", "_convert_": "all",
                                                    "config": TINY}}), splits)
    assert model.model.get_input_embeddings().num_embeddings == splits.vocab_size
    tokens, targets = (torch.stack(parts) for parts in zip(*(splits.val[index] for index in range(3))))
    with torch.no_grad():
        outputs = model((tokens, targets))
    assert outputs["logits"].shape == (3, 8, splits.vocab_size)
    expected = F.cross_entropy(outputs["logits"].flatten(0, 1), targets.flatten())
    assert float(outputs["loss"]) == pytest.approx(float(expected))


def test_built_from_a_local_folder_it_keeps_the_weights_and_resizes_the_vocabulary(tmp_path):
    saved = HFCausalLM(20, config=TINY)
    saved.model.save_pretrained(tmp_path / "tiny")
    loaded = HFCausalLM(30, path=str(tmp_path / "tiny"))
    assert loaded.model.get_input_embeddings().num_embeddings == 30
    block = "transformer.h.0.attn.c_attn.weight"
    assert torch.equal(loaded.model.state_dict()[block], saved.model.state_dict()[block])


def test_weight_decay_groups_hold_the_matrices_apart_from_norms_biases_and_the_embedding():
    model = HFCausalLM(20, config=TINY)
    groups = model.param_groups()
    assert sum(len(group) for group in groups.values()) == len(list(model.parameters()))
    assert all(parameter.dim() == 2 for parameter in groups["decay"])
    assert any(parameter is model.model.get_input_embeddings().weight for parameter in groups["no_decay"])


@pytest.mark.parametrize(("settings", "expected"), [
    ({}, "model=hf_causal_lm needs model.path (a local model folder) or model.config"),
    ({"config": {"n_layer": 2}}, "model.config needs a model_type (e.g. gpt2, llama)"),
])
def test_a_model_without_its_architecture_is_refused_naming_the_setting(settings, expected):
    with pytest.raises(UserError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        HFCausalLM(20, **settings)


@pytest.mark.slow
def test_a_gpt2_trained_by_model_loss_beats_the_character_frequencies_and_a_missing_folder_is_one_line(tmp_path):
    text = generated_text(1500, seed=1)
    (tmp_path / "story.txt").write_text(text)
    run_dir = tmp_path / "run"
    common = ("config=text_gpt", "model=hf_causal_lm", "task=model_loss", f"dataset.path={tmp_path / 'story.txt'}")
    result = run_train(*common, "model.config.n_embd=64", "dataset.block_size=64", "dataset.batch_size=32",
                       "optimizer.lr=3e-3", "scheduler.warmup_steps=10", "trainer.max_epochs=1",
                       f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with (run_dir / "metrics.csv").open() as handle:
        val_losses = [float(row["val/loss"]) for row in csv.DictReader(handle) if row["val/loss"]]
    cut = int(len(text) * 0.9)
    bound = unigram_loss(text[:cut], text[cut:])
    assert val_losses[-1] < val_losses[0] and val_losses[-1] < 0.75 * bound, (val_losses, bound)
    assert json.loads((run_dir / "metrics.json").read_text())["best"]["val/loss"] == pytest.approx(val_losses[-1])

    missing = run_train(*common, f"model.path={tmp_path / 'no_model'}", f"hydra.run.dir={tmp_path / 'bad'}",
                        cwd=tmp_path)
    lines = (missing.stdout + missing.stderr).strip().splitlines()
    assert missing.returncode == 2
    assert len(lines) == 1 and f"model.path={tmp_path / 'no_model'} is no model folder" in lines[0], lines
