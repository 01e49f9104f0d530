"""Named parameter groups: a model may offer `param_groups()` (e.g. TorchvisionClassifier's
backbone and head), which the optimizer config gives settings of their own and
callbacks (BackboneUnfreeze) act on."""
from __future__ import annotations

from torch import nn


def param_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """`model.param_groups()`, or no group for a model without that method."""
    method = getattr(model, "param_groups", None)
    groups: dict[str, list[nn.Parameter]] = method() if callable(method) else {}
    return groups
