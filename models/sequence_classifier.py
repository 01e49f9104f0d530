"""Embedding + LSTM/GRU text classifier over padded token ids (padding id 0, as the text datasets use)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


class SequenceClassifier(nn.Module):
    """Classifies each sequence from the last layer's final hidden state (both directions if bidirectional).

    Sequences are packed by their true lengths, so padding never reaches the recurrent cell and
    the result does not depend on how long the other sequences of the batch are.
    """

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], vocab_size: int, cell: str = "lstm",
                 embedding_dim: int = 128, hidden_size: int = 128, num_layers: int = 1, bidirectional: bool = True,
                 dropout: float = 0.2, padding_idx: int = 0) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        self.padding_idx = padding_idx
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
        # torch applies RNN dropout between layers only, so it is 0 for a single layer.
        self.rnn = CELLS[cell](embedding_dim, hidden_size, num_layers=num_layers, batch_first=True,
                               bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        lengths = (tokens != self.padding_idx).sum(dim=1).clamp(min=1).cpu()
        packed = pack_padded_sequence(self.embedding(tokens), lengths, batch_first=True, enforce_sorted=False)
        _, hidden = self.rnn(packed)
        if isinstance(hidden, tuple):  # LSTM returns (h, c)
            hidden = hidden[0]
        directions = 2 if self.rnn.bidirectional else 1
        last_layer = hidden[-directions:]  # (directions, N, hidden)
        return self.head(self.dropout(torch.cat(list(last_layer), dim=-1)))
