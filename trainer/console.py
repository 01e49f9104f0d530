"""What the user sees in the terminal: the config tree, the run folder with the commands for it, and
the final metrics (the model table is callbacks/model_summary.py).

Everything goes through Rich's global console, which the logging handler and the progress bar
share, so lines never tear a live progress bar.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

console = Console()


def print_config(cfg: DictConfig) -> None:
    """The resolved config as a tree, one branch per group (`train print_config=full`)."""
    tree = Tree("[bold]config[/bold]")
    for key, value in cfg.items():
        key = str(key)  # DictConfig keys may be of other types; the run's config has string keys
        branch = tree.add(f"[bold cyan]{key}[/bold cyan]")
        if isinstance(value, DictConfig):
            branch.add(OmegaConf.to_yaml(value, resolve=True).rstrip() or "{}")
        else:
            branch.label = f"[bold cyan]{key}[/bold cyan]: {value}"
    console.print(tree)


def print_metrics(metrics: dict[str, float], title: str = "final metrics") -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    console.print(table)


def shown_path(path: Path) -> str:
    """`path` as the user would type it: relative to the working directory when inside it."""
    here = Path.cwd().resolve()
    path = path.resolve()
    return shlex.quote(str(path.relative_to(here) if path.is_relative_to(here) else path))


def print_start(summary: dict[str, str]) -> None:
    """The start of a run: one aligned line per label (trainer/commands/start_summary.py)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column()
    for label, text in summary.items():
        grid.add_row(label, Text(text))
    console.print(grid)


def print_next_steps(run_dir: Path) -> None:
    """The run folder again, under the final table, with the commands that open it."""
    folder = shown_path(run_dir)
    console.print(f"run folder: {folder}\n  curves:   tensorboard --logdir {folder}\n"
                  f"  evaluate: evaluate run={folder}", markup=False, highlight=False)
