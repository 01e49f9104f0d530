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
from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
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


def materialize(model: nn.Module, device: torch.device) -> None:
    """Each rank's shards of `model`, sharded while on the meta device, initialised on `device` as the
    whole model would have been: for each module in registration order, its own parameters are made
    whole in temporary tensors, its `reset_parameters` draws them from the global RNG, and each rank
    keeps its slice. One module's parameters are whole at a time, never the whole model.

    The RNG is drawn in the order a model built on a device draws it when each layer initialises
    itself as it is built: then the weights are equal bit for bit. A model that initialises its
    weights otherwise (its own init after building, pretrained weights) cannot be built on the meta
    device; it declares `initializes_weights_itself = True` and is refused (`check_meta_init`).
    """
    model.to_empty(device=device)
    for module in model.modules():
        own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        if not own:
            continue
        reset = getattr(module, "reset_parameters", None)
        if reset is None:
            raise UserError(f"trainer.fsdp.meta_init=true: {type(module).__name__} of model {type(model).__name__} "
                            "has no reset_parameters() to initialise its weights on the shards; set "
                            "trainer.fsdp.meta_init=false")
        shards = {name: param for name, param in module.named_parameters(recurse=False) if isinstance(param, DTensor)}
        whole = {name: nn.Parameter(torch.empty(param.shape, dtype=param.dtype, device=device))
                 for name, param in shards.items()}
        module._parameters.update(whole)
        try:
            with torch.no_grad():
                reset()
        finally:
            module._parameters.update(shards)
        with torch.no_grad():
            for name, param in shards.items():
                param.to_local().copy_(_local_slice(whole[name], param))


def check_meta_init(model: nn.Module) -> None:
    """Refuses a model built on the meta device that `materialize` cannot initialise as it would have been."""
    if getattr(model, "initializes_weights_itself", False):
        raise UserError(f"trainer.fsdp.meta_init=true: model {type(model).__name__} initialises its weights itself "
                        "after building its layers, which initialising each layer's shards cannot reproduce; "
                        "set trainer.fsdp.meta_init=false")


def _local_slice(whole: torch.Tensor, shard: DTensor) -> torch.Tensor:
    """The part of `whole` that this rank's `shard` of it holds."""
    shape, offset = compute_local_shape_and_global_offset(whole.shape, shard.device_mesh, shard.placements)
    for dim, (length, start) in enumerate(zip(shape, offset)):
        whole = whole.narrow(dim, start, length)
    return whole


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
