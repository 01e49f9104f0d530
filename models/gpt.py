"""A small decoder-only Transformer language model (GPT), as in nanoGPT's `model.py`.

Pre-norm blocks (LayerNorm, causal self-attention, LayerNorm, MLP), attention by
`F.scaled_dot_product_attention` with the causal flag (Flash/memory-efficient kernels where the
device has them), learned or rotary positions, and the output layer tied to the token
embedding. `param_groups()` names the parameters weight decay belongs on (the matrices of linear
layers) apart from the rest (norms, biases, embeddings), the usual recipe.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

POSITIONS = ("learned", "rotary")


class GPT(nn.Module):
    # its weights are drawn after its layers are built (nanoGPT's init), not by each layer's reset_parameters
    initializes_weights_itself = True

    def __init__(self, vocab_size: int, block_size: int = 256, n_layer: int = 6, n_head: int = 6, n_embd: int = 384,
                 dropout: float = 0.2, bias: bool = False, positions: str = "learned",
                 tie_weights: bool = True) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} must be a multiple of n_head={n_head}")
        if positions not in POSITIONS:
            raise ValueError(f"positions={positions!r}: use one of {', '.join(POSITIONS)}")
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        self.position_embedding = nn.Embedding(block_size, n_embd) if positions == "learned" else None
        rotary = RotaryEmbedding(n_embd // n_head, block_size) if positions == "rotary" else None
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias, rotary) for _ in range(n_layer))
        self.final_norm = nn.LayerNorm(n_embd, bias=bias)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        if tie_weights:
            self.head.weight = self.token_embedding.weight
        self.apply(_init_weights)
        for name, parameter in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith("projection.weight"):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(batch, time) token ids -> (batch, time, vocab) logits of the next token."""
        length = tokens.shape[1]
        if length > self.block_size:
            raise ValueError(f"a sequence of {length} tokens is longer than block_size={self.block_size}")
        x = self.token_embedding(tokens)
        if self.position_embedding is not None:
            x = x + self.position_embedding(torch.arange(length, device=tokens.device))
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x))

    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None) -> torch.Tensor:
        """`tokens` (batch, time) continued by `max_new_tokens` sampled tokens (the model in eval mode).

        Each step sees the last `block_size` tokens; `temperature` scales the logits (lower: more
        likely tokens), `top_k` samples among the k likeliest only.
        """
        for _ in range(max_new_tokens):
            logits = self(tokens[:, -self.block_size:])[:, -1, :] / max(temperature, 1e-6)
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, [-1]]
                logits = logits.masked_fill(logits < kth, -float("inf"))
            tokens = torch.cat([tokens, torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)], dim=1)
        return tokens

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """`decay`: the weight matrices of linear layers; `no_decay`: norms, biases and embeddings
        (the tied output layer counts as the embedding it shares)."""
        matrices = {id(module.weight) for module in self.modules() if isinstance(module, nn.Linear)}
        matrices.discard(id(self.token_embedding.weight))
        groups: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": []}
        for parameter in self.parameters():
            groups["decay" if id(parameter) in matrices else "no_decay"].append(parameter)
        return groups


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, rotary: RotaryEmbedding | None) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(n_embd, bias=bias)
        self.attention = CausalSelfAttention(n_embd, n_head, dropout, bias, rotary)
        self.mlp_norm = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd, bias=bias), nn.GELU(),
                                 _Projection(4 * n_embd, n_embd, bias), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class _Projection(nn.Module):
    """The linear layer that writes into the residual stream (named so the scaled init finds it)."""

    def __init__(self, n_in: int, n_out: int, bias: bool) -> None:
        super().__init__()
        self.projection = nn.Linear(n_in, n_out, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, rotary: RotaryEmbedding | None) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.output = _Projection(n_embd, n_embd, bias)
        self.rotary = rotary
        self.attention_dropout = dropout
        self.residual_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, channels = x.shape
        q, k, v = (part.view(batch, length, self.n_head, -1).transpose(1, 2)
                   for part in self.qkv(x).split(channels, dim=2))
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attention_dropout if self.training else 0.0,
                                           is_causal=True)
        return self.residual_dropout(self.output(y.transpose(1, 2).contiguous().view(batch, length, channels)))


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoFormer): rotates pairs of query/key channels by position."""

    def __init__(self, head_dim: int, block_size: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary positions need an even head size (n_embd / n_head), not {head_dim}")
        inverse_frequencies = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)
        angles = torch.outer(torch.arange(block_size).float(), inverse_frequencies)
        self.cos: torch.Tensor
        self.sin: torch.Tensor
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, heads, time, head_dim) rotated by each time step's angles."""
        length = x.shape[-2]
        cos, sin = self.cos[:length].to(x.dtype), self.sin[:length].to(x.dtype)
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
