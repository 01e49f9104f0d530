"""Any timm (PyTorch Image Models) model by name: where vision users find backbones.

Needs the `timm` extra (`pip install -e ".[timm]"`). timm builds the model with a head for
`num_classes` and a first layer for the images' channels; pretrained weights come from a local
file (a state_dict or timm's `.safetensors`, e.g. downloaded from the Hugging Face Hub), whose head
is skipped when its size differs. Backbone and head form parameter groups, as for torchvision models.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from decltrain.models.torchvision_classifier import BackboneWithHead, last_linear
from decltrain.models.weights_file import load_weights_file
from decltrain.trainer.errors import UserError


class TimmClassifier(BackboneWithHead):
    """`options` go to `timm.create_model` as they are (e.g. `drop_rate`, `img_size` for ViTs)."""

    def __init__(self, name: str, num_classes: int, input_shape: tuple[int, ...], weights: str | None = None,
                 freeze_backbone: bool = False, **options: Any) -> None:
        try:
            import timm
        except ImportError:
            raise UserError('model=timm needs the timm package: pip install -e ".[timm]"') from None
        if not timm.is_model(name):
            similar = timm.list_models(f"*{name.split('_')[0]}*")[:5]
            raise UserError(f"model.name={name!r} is not a timm model; e.g. "
                            f"{', '.join(similar or ['resnet18', 'convnext_tiny', 'efficientnet_b0'])} "
                            "(timm.list_models() lists them all)")
        net = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=input_shape[0], **options)
        if weights is not None:
            load_weights_file(net, Path(weights), heads=[last_linear(net, name)])
        super().__init__(net, last_linear(net, name), freeze_backbone, pretrained=weights is not None)
