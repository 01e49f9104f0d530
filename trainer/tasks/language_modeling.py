"""Language modeling: the next token at every position of a block, by cross-entropy.

Batches are (tokens, next tokens), both (batch, time), as datasets/text_file.py makes them; the
model maps tokens to (batch, time, vocabulary) logits. Evaluation reports the mean loss per token
and its exponential, the perplexity (torchmetrics' `Perplexity`: summed log-probabilities and a
token count, reduced exactly over ranks). `generate` continues a prompt with the model's own
`generate(tokens, max_new_tokens, temperature, top_k)`, as models/gpt.py has it.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.text import Perplexity

from decltrain.trainer.errors import UserError
from decltrain.trainer.tasks.supervised import scalars


class LanguageModeling:
    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        tokens, targets = batch
        return token_loss(model(tokens), targets)

    def metrics(self, split: str) -> MetricCollection:
        return MetricCollection({"perplexity": Perplexity(), "loss": MeanMetric()}, compute_groups=False)

    def update(self, metrics: MetricCollection, model: nn.Module, batch: Any) -> None:
        tokens, targets = batch
        logits = model(tokens).float()
        metrics["loss"].update(token_loss(logits, targets), weight=targets.numel())
        metrics["perplexity"].update(logits, targets)

    def summarize(self, computed: dict[str, torch.Tensor]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        return scalars(computed), {}

    def model_inputs(self, batch: Any) -> Any:
        return batch[0]

    def predict(self, model: nn.Module, inputs: Any) -> list[dict[str, Any]]:
        """The likeliest next token after each input sequence (`predict prompt=...` generates text)."""
        return [{"next_token": int(token)} for token in model(inputs)[:, -1, :].argmax(dim=-1)]

    def generate(self, model: nn.Module, tokens: torch.Tensor, max_new_tokens: int, temperature: float,
                 top_k: int | None) -> torch.Tensor:
        """`tokens` (1, time) continued by `max_new_tokens` sampled ones, by the model's own `generate`."""
        sample = getattr(model, "generate", None)
        if not callable(sample):
            raise UserError(f"model {type(model).__name__} has no generate(tokens, max_new_tokens, temperature, "
                            "top_k) method, so it cannot continue a prompt; use model=gpt or add one")
        return sample(tokens, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k)

    def output_mismatch(self, model: nn.Module, batch: Any) -> str | None:
        tokens, _ = batch
        logits = model(tokens)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[:2] != tokens.shape:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            return (f"outputs {shape} for tokens {tuple(tokens.shape)}, needs (batch, time, vocabulary): "
                    "logits of the next token at every position")
        return None


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every position of every sequence."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())
