"""The GPT model (models/gpt.py) and the text-file dataset (datasets/text_file.py), on their own."""
from __future__ import annotations

import pytest
import torch

from decltrain.datasets.text_file import build, generated_text
from decltrain.models.gpt import GPT
from decltrain.trainer.errors import UserError


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_a_token_sees_only_the_tokens_before_it(positions):
    torch.manual_seed(0)
    model = GPT(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0, positions=positions).eval()
    tokens = torch.randint(0, 11, (1, 8))
    changed = tokens.clone()
    changed[0, 5] = (tokens[0, 5] + 1) % 11
    logits, changed_logits = model(tokens), model(changed)
    assert logits.shape == (1, 8, 11)
    assert torch.allclose(logits[:, :5], changed_logits[:, :5], atol=1e-6)  # positions before 5: untouched
    assert not torch.allclose(logits[:, 5:], changed_logits[:, 5:])


def test_weight_decay_goes_on_linear_matrices_only():
    model = GPT(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16)
    groups = model.param_groups()
    assert all(parameter.dim() == 2 for parameter in groups["decay"])
    assert any(parameter is model.token_embedding.weight for parameter in groups["no_decay"])  # tied to the head
    assert len(groups["decay"]) + len(groups["no_decay"]) == len(list(model.parameters()))


def test_generate_continues_a_prompt_by_the_requested_number_of_tokens():
    model = GPT(vocab_size=11, block_size=4, n_layer=1, n_head=1, n_embd=8).eval()
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=6, temperature=0.8, top_k=3)
    assert out.shape == (1, 9) and out[0, :3].tolist() == [1, 2, 3]


def test_text_becomes_blocks_whose_targets_are_the_next_tokens(tmp_path):
    text = tmp_path / "input.txt"
    text.write_text(generated_text(200))
    splits = build(str(text), block_size=16, val_fraction=0.1)
    inputs, targets = splits.train[3]
    assert inputs.shape == targets.shape == (16,)
    assert torch.equal(inputs[1:], targets[:-1])
    encode = splits.eval_transform
    assert encode.decode(encode("the cat sees").tolist()) == "the cat sees"
    assert splits.vocab_size == encode.vocab_size and splits.val is splits.test


def test_bpe_is_trained_on_the_training_text_and_round_trips():
    splits = build("unused", fake=True, tokenizer="bpe", bpe_vocab_size=300, block_size=16)
    encode = splits.eval_transform
    assert splits.vocab_size == 300
    assert encode.decode(encode("the old man finds é").tolist()) == "the old man finds é"  # bytes: nothing unknown
    assert len(encode("the old man finds the moon")) < 0.7 * len("the old man finds the moon")  # merges learned


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"path": "missing.txt"}, r"dataset.path=.*missing.txt does not exist"),
    ({"path": "fake", "fake": True, "block_size": 10**6}, r"fewer than dataset.block_size=1000000"),
    ({"path": "fake", "fake": True, "tokenizer": "words"}, r"dataset.tokenizer='words' is not valid"),
])
def test_bad_settings_are_one_line(kwargs, message):
    with pytest.raises(UserError, match=message):
        build(**kwargs)
