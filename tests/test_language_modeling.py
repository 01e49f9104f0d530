"""`train config=text_gpt` learns a text and `predict prompt=...` continues it (issue: sequences)."""
from __future__ import annotations

import json
import math

import pytest

from decltrain.datasets.text_file import generated_text
from tests.helpers.commands import run_command, run_train
from tests.helpers.text import unigram_loss

SMALL = ("model.n_layer=2", "model.n_head=2", "model.n_embd=64", "model.dropout=0.0", "dataset.block_size=64",
         "dataset.batch_size=32", "optimizer.lr=3e-3", "scheduler.warmup_steps=10", "trainer.max_epochs=3")


@pytest.mark.slow
def test_a_character_gpt_beats_the_character_frequencies_and_continues_a_prompt(tmp_path):
    text = generated_text(1500, seed=1)
    (tmp_path / "story.txt").write_text(text)
    run_dir = tmp_path / "run"
    trained = run_train("config=text_gpt", f"dataset.path={tmp_path / 'story.txt'}", *SMALL,
                        f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cut = int(len(text) * 0.9)
    bound = unigram_loss(text[:cut], text[cut:])
    assert metrics["best"]["val/loss"] < 0.6 * bound, (metrics["best"], bound)
    assert metrics["best"]["val/perplexity"] == pytest.approx(math.exp(metrics["best"]["val/loss"]), rel=1e-4)

    generated = run_command("predict", f"run={run_dir}", "prompt=the cat", "max_new_tokens=50", "top_k=5",
                            cwd=tmp_path, data_dir=tmp_path / "nowhere")
    assert generated.returncode == 0, generated.stdout + generated.stderr
    written = (run_dir / "generated.txt").read_text().rstrip("\n")
    assert written.startswith("the cat") and len(written) == len("the cat") + 50
    assert written in generated.stdout


@pytest.mark.slow
def test_prompt_is_refused_for_a_run_that_is_no_language_model(tiny_run, tmp_path, data_dir):
    result = run_command("predict", f"run={tiny_run}", "prompt=hello", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 2
    assert "prompt= continues text with a language model" in result.stdout + result.stderr
