"""Any torchvision classification model by name, ready for transfer learning.

The pretrained weights come from a local file (a state_dict, or one of this project's
checkpoints) or, when online, a torchvision weights name (`DEFAULT`, `IMAGENET1K_V1`). The last
linear layer (the head) is then replaced to fit the number of classes. `param_groups` splits the
parameters into `backbone` and `head`, so the optimizer can give them different learning rates
and `callbacks.BackboneUnfreeze` can unfreeze the backbone later.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

from decltrain.models.blocks import checkpointed
from decltrain.models.weights_file import is_weights_file, load_weights_file
from decltrain.trainer.errors import UserError

log = logging.getLogger(__name__)


class BackboneWithHead(nn.Module):
    """A network (`net`) whose last linear layer (`head_name`) is the classification head: its
    parameters form the `head` group, all others the `backbone` group (frozen on request)."""

    def __init__(self, net: nn.Module, head_name: str, freeze_backbone: bool, pretrained: bool) -> None:
        super().__init__()
        self.net = net
        self.head_name = head_name
        if freeze_backbone:
            if not pretrained:
                log.warning("model.freeze_backbone=true with model.weights=null: the frozen backbone is random; "
                            "set model.weights to a weights file (or IMAGENET1K_V1 when online) to transfer")
            self.set_backbone_trainable(False)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Backbone and head parameters, frozen ones included (see `set_backbone_trainable`)."""
        groups: dict[str, list[nn.Parameter]] = {"backbone": [], "head": []}
        for param_name, param in self.net.named_parameters():
            groups["head" if param_name.startswith(self.head_name + ".") else "backbone"].append(param)
        return groups

    def set_backbone_trainable(self, trainable: bool) -> None:
        """Freezes or unfreezes every backbone parameter; BatchNorm running statistics still adapt in training."""
        for param in self.param_groups()["backbone"]:
            param.requires_grad_(trainable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TorchvisionClassifier(BackboneWithHead):
    def __init__(self, name: str, num_classes: int, input_shape: tuple[int, ...], weights: str | None = None,
                 freeze_backbone: bool = False, activation_checkpointing: bool = False) -> None:
        net = _pretrained(name, weights)
        head_name = last_linear(net, name)
        old_head = net.get_submodule(head_name)
        assert isinstance(old_head, nn.Linear)  # what last_linear looks for
        parent_name, _, attribute = head_name.rpartition(".")
        setattr(net.get_submodule(parent_name), attribute, nn.Linear(old_head.in_features, num_classes))
        if activation_checkpointing:
            _checkpoint_blocks(net, head_name, name)
        super().__init__(net, head_name, freeze_backbone, pretrained=weights is not None)


def _pretrained(name: str, weights: str | None) -> nn.Module:
    """torchvision's `name` with its original head, loaded with `weights` (a file or a torchvision name)."""
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise UserError(f"model.name={name!r} is not a torchvision classification model; "
                        f"pick one of e.g. resnet18, resnet50, mobilenet_v3_small, efficientnet_b0, vit_b_16")
    if weights is None or is_weights_file(weights):
        net = torchvision.models.get_model(name, weights=None)
        if weights is not None:
            load_weights_file(net, Path(weights), heads=[last_linear(net, name)])
        return net
    try:
        return torchvision.models.get_model(name, weights=weights)
    except (KeyError, ValueError):
        known = ", ".join(torchvision.models.get_model_weights(name).__members__)
        raise UserError(f"model.weights={weights!r} is neither a file nor a weights name of {name} "
                        f"({known})") from None
    except OSError as err:  # urllib's URLError is an OSError
        raise UserError(f"model.weights={weights}: could not download the {name} weights ({err}); "
                        f"offline, download them elsewhere and set model.weights=/path/to/file.pth") from None


def last_linear(net: nn.Module, name: str) -> str:
    """The qualified name of the last `nn.Linear`: the classification head of torchvision models."""
    linears = [module_name for module_name, module in net.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise UserError(f"model.name={name!r} has no linear classification head to replace; pick another model")
    return linears[-1]


def _checkpoint_blocks(net: nn.Module, head_name: str, name: str) -> None:
    """Runs each top-level `nn.Sequential` stage (resnet's layer1-4, mobilenet's features) checkpointed."""
    stages = [child_name for child_name, child in net.named_children()
              if isinstance(child, nn.Sequential) and not head_name.startswith(child_name + ".")]
    if not stages:
        raise UserError(f"model.activation_checkpointing=true is not supported for {name} (no sequential "
                        "stages); set it to false")
    for stage in stages:
        setattr(net, stage, checkpointed(getattr(net, stage), enabled=True))
