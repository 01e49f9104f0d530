"""`trainer.strategy=fsdp`: the model sharded over the ranks with PyTorch's FSDP2 (`fully_shard`).

Every rank holds 1/N of each parameter, its gradient and its optimizer state; a shard unit
(`trainer.fsdp.shard_modules`) gathers its whole parameters just for its own forward and
backward. The parameters become DTensors, so the optimizer, built before sharding, is pointed
at the sharded ones here (its param groups and their order stay as built).

Checkpoints are written sharded (trainer/engine/sharded_checkpoint.py); here are the conversions
between whole states, as one process holds them (the optimizer's state keyed by parameter
position, not name), and sharded parameters: an ordinary checkpoint file loads onto the shards.
"""
from __future__ import annotations

import functools
from typing import Any, cast

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint

from decltrain.trainer.engine.settings import FsdpSettings
from decltrain.trainer.errors import UserError

# Gathered on every rank, kept on rank 0 only, on the CPU: what a checkpoint file holds.
_CONSOLIDATED = StateDictOptions(full_state_dict=True, cpu_offload=True)
# A whole state given to every rank, each keeping its shard of it (keys were checked before).
_FROM_FULL = StateDictOptions(full_state_dict=True, strict=False)


def shard(model: nn.Module, settings: FsdpSettings, param_dtype: torch.dtype | None) -> FSDPModule:
    """`model` sharded in place: its shard units first, then the root (which holds the rest)."""
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    options: dict[str, Any] = {"reshard_after_forward": settings.reshard_after_forward, "mp_policy": policy}
    if settings.cpu_offload:
        options["offload_policy"] = CPUOffloadPolicy()
    for unit in shard_units(model, settings.shard_modules):
        if settings.activation_checkpointing:
            recompute_in_backward(unit)
        fully_shard(unit, **options)
    return fully_shard(model, **options)


def shard_units(model: nn.Module, class_names: list[str] | None) -> list[nn.Module]:
    """The modules of `model` named by class in `class_names`, innermost first; None: its direct
    children with parameters, and the items of its lists and dicts of modules (which have no forward
    of their own: GPT's `blocks`). Modules that hold a parameter tied to one outside them (GPT's
    output layer and token embedding) are left to the root, which FSDP requires of a shared parameter."""
    if class_names is None:
        units = [unit for child in model.children() for unit in _items(child) if any(True for _ in unit.parameters())]
    else:
        present = {type(module).__name__ for module in model.modules()}
        unknown = [name for name in class_names if name not in present]
        if unknown:
            raise UserError(f"trainer.fsdp.shard_modules names {', '.join(unknown)}, which model "
                            f"{type(model).__name__} does not contain; it contains {', '.join(sorted(present))}")
        # Inner units first: an outer unit then holds only what its inner units do not (FSDP's nesting order).
        units = [module for module in reversed(list(model.modules()))
                 if module is not model and type(module).__name__ in class_names]
    return [unit for unit in units if not _ties_outside(unit, model)]


def _ties_outside(unit: nn.Module, model: nn.Module) -> bool:
    """True when a parameter of `unit` is also registered in `model` under a name outside `unit`."""
    prefix = next(name for name, module in model.named_modules() if module is unit) + "."
    inside = {id(param) for param in unit.parameters()}
    return any(id(param) in inside and not name.startswith(prefix)
               for name, param in model.named_parameters(remove_duplicate=False))


def _items(module: nn.Module) -> list[nn.Module]:
    return list(module.children()) if isinstance(module, (nn.ModuleList, nn.ModuleDict)) else [module]


def recompute_in_backward(module: nn.Module) -> None:
    """Activation checkpointing of one shard unit: its forward keeps no activations, backward recomputes
    them (while FSDP holds the unit's parameters gathered for its backward)."""
    module.forward = functools.partial(checkpoint, module.forward, use_reentrant=False)


def adopt_sharded_parameters(optimizer: torch.optim.Optimizer, names_before: dict[int, str],
                             model: nn.Module) -> None:
    """Points `optimizer` (built on the unsharded model, no state yet) at the sharded parameters.

    `names_before` maps id() of each parameter before sharding to its name, which sharding keeps.
    """
    sharded = dict(model.named_parameters())
    for group in optimizer.param_groups:
        group["params"] = [sharded[names_before[id(param)]] for param in group["params"]]


def is_sharded(model: nn.Module) -> bool:
    return any(isinstance(param, DTensor) for param in model.parameters())


def consolidated_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full weights on rank 0 (empty elsewhere); a collective."""
    return cast(dict[str, torch.Tensor], get_model_state_dict(model, options=_CONSOLIDATED))


def load_full_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Every rank keeps its shard of the full `weights` (which every rank holds)."""
    set_model_state_dict(model, dict(weights), options=_FROM_FULL)


def consolidated_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The full optimizer state on rank 0, keyed by position as `optimizer.state_dict()` keys it; a collective."""
    by_name: dict[str, Any] = dict(get_optimizer_state_dict(model, optimizer, options=_CONSOLIDATED))
    return keyed_by_position(by_name) if by_name else {}


def keyed_by_position(by_name: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state keyed by parameter name (torch.distributed.checkpoint's) keyed by position
    instead, as `optimizer.state_dict()` keys it: the order of the names in its param groups."""
    names = [name for group in by_name["param_groups"] for name in group["params"]]
    position = {name: index for index, name in enumerate(names)}
    return {"state": {position[name]: value for name, value in by_name["state"].items()},
            "param_groups": [{**group, "params": [position[name] for name in group["params"]]}
                             for group in by_name["param_groups"]]}


def load_full_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Every rank keeps its shard of the full optimizer `state` (keyed by position, as checkpoints hold it)."""
    names = _parameter_names(model, optimizer)
    by_name = {"state": {names[index]: value for index, value in state["state"].items()},
               "param_groups": [{**group, "params": [names[index] for index in group["params"]]}
                                for group in state["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, by_name, options=_FROM_FULL)  # type: ignore[arg-type]  # torch's alias of a state_dict


def _parameter_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The names of the optimizer's parameters in its own order (the positions of its state_dict)."""
    name_of = {id(param): name for name, param in model.named_parameters()}
    return [name_of[id(param)] for group in optimizer.param_groups for param in group["params"]]
