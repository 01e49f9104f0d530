"""What the user sees in the terminal: the config tree, a model summary, the final metrics.

Everything goes through Rich's global console, which the logging handler and the progress bar
share, so lines never tear a live progress bar.
"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from rich.tree import Tree
from torch import nn

console = Console()


def print_config(cfg: DictConfig, callback_names: list[str]) -> None:
    """The resolved config as a tree, one branch per group, and the active callbacks in order."""
    tree = Tree("[bold]config[/bold]")
    for key, value in cfg.items():
        branch = tree.add(f"[bold cyan]{key}[/bold cyan]")
        if isinstance(value, DictConfig):
            branch.add(OmegaConf.to_yaml(value, resolve=True).rstrip() or "{}")
        else:
            branch.label = f"[bold cyan]{key}[/bold cyan]: {value}"
    tree.add(f"[bold cyan]active callbacks[/bold cyan]: {', '.join(callback_names) or 'none'}")
    console.print(tree)


def print_model_summary(model: nn.Module) -> None:
    """Parameters per top-level module, with totals and how many are trainable."""
    table = Table(title=f"model: {type(model).__name__}")
    table.add_column("module")
    table.add_column("type")
    table.add_column("parameters", justify="right")
    table.add_column("trainable", justify="right")
    for name, child in model.named_children():
        params = list(child.parameters())
        table.add_row(name, type(child).__name__, f"{sum(p.numel() for p in params):,}",
                      f"{sum(p.numel() for p in params if p.requires_grad):,}")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    table.add_section()
    table.add_row("total", "", f"{total:,}", f"{trainable:,}")
    console.print(table)


def print_metrics(metrics: dict[str, float], title: str = "final metrics") -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    console.print(table)
