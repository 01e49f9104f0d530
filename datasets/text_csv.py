"""Text classification from a local CSV of text and label, with a built-in tokenizer and vocabulary.

Tokens are lower-cased words and punctuation marks. The vocabulary is built from the training
rows only (no peeking at validation or test): id 0 pads, id 1 stands for unknown words.
Batches are padded to their longest sequence by `pad_collate`.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from decltrain.datasets.base import FAKE_SIZES, DataSplits, loader_settings, read_csv_rows, split_indices

PAD, UNK = 0, 1
TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    return TOKEN.findall(text.lower() if lowercase else text)


class TextEncoder:
    """A string to its token ids (at most `max_length`, at least one: empty text becomes <unk>)."""

    def __init__(self, vocabulary: dict[str, int], max_length: int, lowercase: bool = True) -> None:
        self.vocabulary = vocabulary
        self.max_length = max_length
        self.lowercase = lowercase

    def __call__(self, text: str) -> torch.Tensor:
        ids = [self.vocabulary.get(token, UNK) for token in tokenize(text, self.lowercase)[:self.max_length]]
        return torch.tensor(ids or [UNK], dtype=torch.long)


def build_vocabulary(texts: list[str], min_freq: int, max_size: int, lowercase: bool = True) -> dict[str, int]:
    """The `max_size` most frequent tokens seen at least `min_freq` times (ties in first-seen order)."""
    counts = Counter(token for text in texts for token in tokenize(text, lowercase))
    kept = [token for token, count in counts.most_common(max(0, max_size - 2)) if count >= min_freq]
    return {"<pad>": PAD, "<unk>": UNK, **{token: i for i, token in enumerate(kept, start=2)}}


def pad_collate(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacks variable-length id sequences into (N, longest) padded with PAD, and the labels."""
    sequences, labels = zip(*batch)
    return pad_sequence(list(sequences), batch_first=True, padding_value=PAD), torch.tensor(labels)


class EncodedTexts(Dataset):
    def __init__(self, sequences: list[torch.Tensor], labels: list[int]) -> None:
        self.sequences = sequences
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.sequences[index], self.labels[index]


def build(path: str, text_column: str = "text", label_column: str = "label", max_length: int = 256,
          min_freq: int = 1, max_vocab_size: int = 20000, lowercase: bool = True, val_fraction: float = 0.15,
          test_fraction: float = 0.15, val_split_seed: int = 0, fake: bool = False, fake_vocab_size: int = 1000,
          fake_num_classes: int = 2, **loader: Any) -> DataSplits:
    """Reads `path` (or with `fake` generates random token sequences of up to `max_length`)."""
    if fake:
        return _fake(max_length, fake_vocab_size, fake_num_classes, loader)
    rows = read_csv_rows(path, [text_column, label_column], "dataset")
    texts = [row[text_column] or "" for row in rows]
    class_names = sorted({row[label_column] for row in rows})
    index = {name: i for i, name in enumerate(class_names)}
    labels = [index[row[label_column]] for row in rows]
    parts = split_indices(len(rows), [val_fraction, test_fraction], val_split_seed)
    vocabulary = build_vocabulary([texts[i] for i in parts[0]], min_freq, max_vocab_size, lowercase)
    encode = TextEncoder(vocabulary, max_length, lowercase)
    train, val, test = (EncodedTexts([encode(texts[i]) for i in part], [labels[i] for i in part]) for part in parts)
    return DataSplits(train=train, val=val, test=test, num_classes=len(class_names), input_shape=(max_length,),
                      loader=loader_settings(**loader, default_collate_fn=pad_collate), class_names=class_names,
                      task="multiclass", name=f"text:{Path(path).name}", eval_transform=encode,
                      vocab_size=len(vocabulary))


def _fake(max_length: int, vocab_size: int, num_classes: int, loader: dict[str, Any]) -> DataSplits:
    """Random sequences of random lengths; fake words `w2`, `w3`, ... make a matching vocabulary."""
    generator = torch.Generator().manual_seed(0)

    def split(count: int) -> EncodedTexts:
        lengths = torch.randint(1, max_length + 1, (count,), generator=generator).tolist()
        return EncodedTexts([torch.randint(2, vocab_size, (n,), generator=generator) for n in lengths],
                            torch.randint(0, num_classes, (count,), generator=generator).tolist())

    vocabulary = {"<pad>": PAD, "<unk>": UNK, **{f"w{i}": i for i in range(2, vocab_size)}}
    train, val, test = (split(count) for count in FAKE_SIZES)
    return DataSplits(train=train, val=val, test=test, num_classes=num_classes, input_shape=(max_length,),
                      loader=loader_settings(**loader, default_collate_fn=pad_collate),
                      class_names=[f"class_{i}" for i in range(num_classes)], task="multiclass", name="text:fake",
                      eval_transform=TextEncoder(vocabulary, max_length), vocab_size=vocab_size)
