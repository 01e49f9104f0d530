"""A Hugging Face `transformers` causal language model that computes its own loss (`task=model_loss`).

Built from a local folder (`from_pretrained`, local files only: nothing is downloaded) or from a
config (`AutoConfig.for_model(model_type, ...)`, new weights). The vocabulary is the dataset's
tokenizer's, so a folder's model whose embedding has another size gets it resized (new rows are
untrained). It takes the (tokens, next tokens) batches of `dataset=text_file` and returns the
logits with the loss: the mean cross-entropy of the next token at every position.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from decltrain.trainer.errors import UserError


class HFCausalLM(nn.Module):
    def __init__(self, vocab_size: int, path: str | None = None, config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        try:
            from transformers import AutoConfig, AutoModelForCausalLM
        except ImportError:
            raise UserError("model=hf_causal_lm needs the `transformers` package: pip install -e '.[hf]'") from None
        if path is not None:
            folder = Path(path).expanduser()
            if not (folder / "config.json").is_file():
                raise UserError(f"model.path={folder.resolve()} is no model folder (no config.json there); point it at "
                                "a folder written by save_pretrained, or set model.path=null to build from model.config")
            # float32 weights whatever the folder holds: the run's trainer.precision sets the compute precision
            self.model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
            if self.model.get_input_embeddings().num_embeddings != vocab_size:
                self.model.resize_token_embeddings(vocab_size)
        elif config:
            settings = dict(config)
            model_type = settings.pop("model_type", None)
            if model_type is None:
                raise UserError("model.config needs a model_type (e.g. gpt2, llama), the architecture to build")
            settings["vocab_size"] = vocab_size
            self.model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **settings))
        else:
            raise UserError("model=hf_causal_lm needs model.path (a local model folder) or model.config "
                            "(e.g. {model_type: gpt2, n_layer: 2, n_head: 2, n_embd: 64})")

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The logits of the tokens and their `loss` against the next tokens (every position counts:
        the batch is already shifted, so the model's own `labels=` shift is not used)."""
        tokens, targets = batch
        logits = self.model(input_ids=tokens).logits
        return {"loss": F.cross_entropy(logits.flatten(0, 1), targets.flatten()), "logits": logits}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """`decay`: the weight matrices; `no_decay`: norms, biases and the token embedding (and an
        output layer tied to it), as `optimizer.param_groups.no_decay` of config=text_gpt expects."""
        embeddings = {id(self.model.get_input_embeddings().weight)}
        groups: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": []}
        for parameter in self.parameters():
            matrix = parameter.dim() >= 2 and id(parameter) not in embeddings
            groups["decay" if matrix else "no_decay"].append(parameter)
        return groups
