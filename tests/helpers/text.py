"""The bound a language model has to beat: predicting the training text's character frequencies."""
from __future__ import annotations

import math
from collections import Counter


def unigram_loss(train: str, held_out: str) -> float:
    """Cross-entropy (nats per character) on `held_out` of predicting the training text's character frequencies."""
    counts = Counter(train)
    return -sum(math.log(counts[char] / len(train)) for char in held_out) / len(held_out)
