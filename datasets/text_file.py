"""Plain text for language modeling: a file or a folder of `.txt` files, as fixed-length token blocks.

The text is split by position (the first part trains, the rest validates and tests, as nanoGPT
splits Shakespeare), tokenized by characters or by a byte-level BPE tokenizer (Hugging Face
`tokenizers`, the `text` extra) trained on the training part only, and cut into blocks of
`block_size` tokens; a sample is a block and the same block one token later (the next token at
every position). The tokenizer is the splits' `eval_transform`, so it travels in the run folder
(commands/inference_record.py) and `predict` encodes prompts and decodes samples with it.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from decltrain.datasets.base import DataSplits, loader_settings
from decltrain.datasets.in_memory import InMemory
from decltrain.trainer.errors import UserError

TOKENIZERS = ("char", "bpe")
UNKNOWN = "<unk>"  # the character tokenizer's id 0: characters the training text lacks


class CharTokenizer:
    """Characters of the training text as ids (id 0 for any other character)."""

    def __init__(self, text: str) -> None:
        self.symbols = [UNKNOWN, *sorted(set(text))]
        self.ids = {symbol: index for index, symbol in enumerate(self.symbols)}

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def __call__(self, text: str) -> torch.Tensor:
        return torch.tensor([self.ids.get(char, 0) for char in text], dtype=torch.long)

    def decode(self, ids: list[int]) -> str:
        return "".join(self.symbols[index] if index else "?" for index in ids)


class BPETokenizer:
    """A byte-level BPE tokenizer trained on the training text: any text encodes, nothing is unknown."""

    def __init__(self, text: str, vocab_size: int) -> None:
        try:
            from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        except ImportError:
            raise UserError("dataset.tokenizer=bpe needs the `tokenizers` package: pip install -e '.[text]'") from None
        self.tokenizer = Tokenizer(models.BPE())
        self.tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        self.tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        self.tokenizer.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def __call__(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer.encode(text).ids, dtype=torch.long)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)


def build(path: str, tokenizer: str = "char", bpe_vocab_size: int = 1024, block_size: int = 256,
          val_fraction: float = 0.1, in_memory: bool = True, fake: bool = False, **loader: Any) -> DataSplits:
    """The text at `path` (or with `fake`, a generated text with a grammar to learn) as token blocks.

    Validation and test share the held-out end of the text (`val_fraction` of it).
    """
    if tokenizer not in TOKENIZERS:
        raise UserError(f"dataset.tokenizer={tokenizer!r} is not valid; use one of {', '.join(TOKENIZERS)}")
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"dataset.val_fraction={val_fraction} must lie between 0 and 1")
    text = generated_text() if fake else read_text(Path(path))
    cut = int(len(text) * (1 - val_fraction))
    encode = CharTokenizer(text[:cut]) if tokenizer == "char" else BPETokenizer(text[:cut], bpe_vocab_size)
    train = _blocks(encode(text[:cut]), block_size, in_memory, "training")
    held_out = _blocks(encode(text[cut:]), block_size, in_memory, "validation")
    return DataSplits(train=train, val=held_out, test=held_out, num_classes=encode.vocab_size,
                      input_shape=(block_size,), loader=loader_settings(**loader), name=f"text:{Path(path).name}",
                      eval_transform=encode, vocab_size=encode.vocab_size)


def read_text(path: Path) -> str:
    """A file's text, or the `.txt` files of a folder in name order, joined by blank lines."""
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise UserError(f"dataset.path={path} is a folder without .txt files; point it at a text file or "
                            "a folder of them")
        return "\n\n".join(file.read_text(encoding="utf-8") for file in files)
    if not path.is_file():
        raise UserError(f"dataset.path={path.resolve()} does not exist; set dataset.path to a text file or a folder "
                        "of .txt files")
    return path.read_text(encoding="utf-8")


def generated_text(sentences: int = 3000, seed: int = 0) -> str:
    """Sentences of a small grammar (who does what, where): structure a small model learns in seconds."""
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "the old man", "my sister", "the bird"]
    verbs = ["sees", "likes", "follows", "finds", "calls"]
    objects = ["the ball", "a friend", "the moon", "her book", "the river"]
    places = ["in the garden.", "by the sea.", "at home.", "under the tree."]
    return "\n".join(" ".join(rng.choice(words) for words in (subjects, verbs, objects, places))
                     for _ in range(sentences))


def _blocks(tokens: torch.Tensor, block_size: int, in_memory: bool, part: str) -> Dataset:
    """Consecutive, non-overlapping blocks; the targets are the same positions one token later."""
    count = (len(tokens) - 1) // block_size
    if count < 1:
        raise UserError(f"the {part} text has {len(tokens)} tokens, fewer than dataset.block_size={block_size} + 1; "
                        "use a longer text, a smaller block_size or a smaller val_fraction")
    inputs = tokens[:count * block_size].view(count, block_size)
    targets = tokens[1:count * block_size + 1].view(count, block_size)
    return InMemory(inputs, targets) if in_memory else TensorDataset(inputs, targets)
