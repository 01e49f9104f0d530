"""Models: forward shapes, activation checkpointing, transfer learning (weights, freezing, groups, unfreezing)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from decltrain.callbacks import BackboneUnfreeze
from decltrain.models import MLP, CifarCNN, MnistCNN, SequenceClassifier, TorchvisionClassifier
from decltrain.trainer.commands import build
from decltrain.trainer.errors import UserError

IMAGE_MODELS = [
    (lambda: MLP(10, (1, 28, 28), hidden_sizes=[32, 16]), (1, 28, 28), 10),
    (lambda: MnistCNN(10, (1, 28, 28)), (1, 28, 28), 10),
    (lambda: CifarCNN(7, (3, 32, 32)), (3, 32, 32), 7),
    (lambda: TorchvisionClassifier("resnet18", 5, (3, 32, 32)), (3, 32, 32), 5),
    (lambda: TorchvisionClassifier("mobilenet_v3_small", 3, (3, 64, 64)), (3, 64, 64), 3),
]


@pytest.mark.parametrize(("make", "shape", "classes"), IMAGE_MODELS,
                         ids=["mlp", "mnist_cnn", "cifar_cnn", "resnet18", "mobilenet_v3_small"])
def test_image_models_give_one_logit_per_class(make, shape, classes):
    assert make().eval()(torch.randn(3, *shape)).shape == (3, classes)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_sequence_classifier_shape_and_padding_invariance(cell):
    torch.manual_seed(0)
    model = SequenceClassifier(4, (12,), vocab_size=50, cell=cell, num_layers=2, bidirectional=True).eval()
    tokens = torch.tensor([[5, 6, 7, 0, 0], [9, 0, 0, 0, 0]])
    out = model(tokens)
    assert out.shape == (2, 4)
    # More padding must not change the result: padded positions never reach the cell.
    more_padding = torch.cat([tokens, torch.zeros(2, 6, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(more_padding), out)


def test_sequence_classifier_rejects_unknown_cell():
    with pytest.raises(ValueError, match="cell must be one of lstm, gru"):
        SequenceClassifier(2, (8,), vocab_size=10, cell="rnn")


@pytest.mark.parametrize(("make", "shape"), [
    (lambda ckpt: MLP(4, (6,), hidden_sizes=[8, 8, 8], dropout=0.3, activation_checkpointing=ckpt), (6,)),
    (lambda ckpt: CifarCNN(4, (3, 16, 16), channels=[4, 8, 8], hidden=8, activation_checkpointing=ckpt),
     (3, 16, 16)),
    (lambda ckpt: TorchvisionClassifier("resnet18", 4, (3, 32, 32), activation_checkpointing=ckpt), (3, 32, 32)),
], ids=["mlp", "cifar_cnn", "resnet18"])
def test_activation_checkpointing_keeps_keys_outputs_and_gradients(make, shape):
    plain, checkpointed = make(False), make(True)
    assert list(plain.state_dict()) == list(checkpointed.state_dict())
    checkpointed.load_state_dict(plain.state_dict())
    inputs = torch.randn(4, *shape)
    grads = []
    for model in (plain, checkpointed):
        torch.manual_seed(1)  # the same dropout masks in both models
        model.train()
        model(inputs).square().sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for plain_grad, checkpointed_grad in zip(*grads):
        torch.testing.assert_close(plain_grad, checkpointed_grad)


def test_freezing_leaves_exactly_the_head_trainable():
    model = TorchvisionClassifier("resnet18", 6, (3, 32, 32), freeze_backbone=True)
    assert [name for name, p in model.named_parameters() if p.requires_grad] == ["net.fc.weight", "net.fc.bias"]
    mobilenet = TorchvisionClassifier("mobilenet_v3_small", 6, (3, 32, 32), freeze_backbone=True)
    trainable = [name for name, p in mobilenet.named_parameters() if p.requires_grad]
    assert trainable == ["net.classifier.3.weight", "net.classifier.3.bias"]
    assert mobilenet.net.classifier[3].out_features == 6


@pytest.fixture
def resnet18_weights(tmp_path):
    """A torchvision state_dict file, as a user would download it (random here: offline)."""
    torch.manual_seed(3)
    source = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    return path, source


def test_weights_load_from_a_local_file_and_the_head_is_replaced(resnet18_weights):
    path, source = resnet18_weights
    model = TorchvisionClassifier("resnet18", 4, (3, 32, 32), weights=str(path))
    torch.testing.assert_close(model.net.conv1.weight, source.conv1.weight)
    torch.testing.assert_close(model.net.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    assert model.net.fc.weight.shape == (4, 512)


def test_weights_load_from_one_of_our_checkpoints(tmp_path, resnet18_weights):
    path, source = resnet18_weights
    trained = TorchvisionClassifier("resnet18", 4, (3, 32, 32), weights=str(path))
    torch.save({"model": trained.state_dict()}, tmp_path / "last.ckpt")
    model = TorchvisionClassifier("resnet18", 9, (3, 32, 32), weights=str(tmp_path / "last.ckpt"))
    torch.testing.assert_close(model.net.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert model.net.fc.out_features == 9


@pytest.mark.parametrize(("content", "name", "message"), [
    (None, "missing.pth", "does not exist"),
    (b"not a torch file", "broken.pth", "is not a readable weights file"),
])
def test_bad_weights_files_fail_with_one_clear_line(tmp_path, content, name, message):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=message):
        TorchvisionClassifier("resnet18", 2, (3, 32, 32), weights=str(tmp_path / name))


def test_weights_of_another_model_do_not_fit(tmp_path):
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), tmp_path / "mobilenet.pth")
    with pytest.raises(UserError, match="does not fit ResNet"):
        TorchvisionClassifier("resnet18", 2, (3, 32, 32), weights=str(tmp_path / "mobilenet.pth"))


def test_unknown_model_and_weights_names_are_user_errors():
    with pytest.raises(UserError, match="not a torchvision classification model"):
        TorchvisionClassifier("resnet19", 2, (3, 32, 32))
    with pytest.raises(UserError, match="IMAGENET1K_V1"):
        TorchvisionClassifier("resnet18", 2, (3, 32, 32), weights="IMAGENET_WRONG")


def test_a_timm_model_fits_the_classes_and_channels_and_loads_a_local_safetensors_file(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    from decltrain.models import TimmClassifier

    pretrained = timm.create_model("resnet18", num_classes=1000)  # as downloaded: an ImageNet head
    save_file(pretrained.state_dict(), str(tmp_path / "model.safetensors"))
    model = TimmClassifier("resnet18", 5, (3, 32, 32), weights=str(tmp_path / "model.safetensors"),
                           freeze_backbone=True)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert torch.equal(model.net.conv1.weight, pretrained.conv1.weight)  # the backbone loaded, the head new
    assert [p.requires_grad for p in model.param_groups()["head"]] == [True, True]
    assert not any(p.requires_grad for p in model.param_groups()["backbone"])
    assert TimmClassifier("resnet18", 3, (1, 28, 28))(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    with pytest.raises(UserError, match="'resnet19' is not a timm model; e.g. resnet"):
        TimmClassifier("resnet19", 2, (3, 32, 32))


def optimizer_cfg(**param_groups):
    return OmegaConf.create({"optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1,
                                           **({"param_groups": param_groups} if param_groups else {})}})


def test_optimizer_param_groups_give_the_backbone_its_own_rate():
    model = TorchvisionClassifier("resnet18", 3, (3, 32, 32), freeze_backbone=True)
    optimizer = build.optimizer(optimizer_cfg(backbone={"lr": 0.01}), model)
    backbone, head = optimizer.param_groups
    assert (backbone["lr"], head["lr"]) == (0.01, 0.1)
    # Frozen parameters are held from the start, so unfreezing needs no new group.
    assert len(backbone["params"]) + len(head["params"]) == len(list(model.parameters()))
    assert head["params"] == [model.net.fc.weight, model.net.fc.bias]


def test_optimizer_param_groups_need_a_model_that_names_them():
    with pytest.raises(UserError, match="model MLP names no parameter groups"):
        build.optimizer(optimizer_cfg(backbone={"lr": 0.01}), MLP(2, (4,)))
    with pytest.raises(UserError, match="optimizer.param_groups.encoder: .* has the groups backbone, head"):
        build.optimizer(optimizer_cfg(encoder={"lr": 0.01}), TorchvisionClassifier("resnet18", 2, (3, 32, 32)))


def test_backbone_unfreeze_trains_the_backbone_from_its_epoch():
    torch.manual_seed(0)
    model = TorchvisionClassifier("resnet18", 2, (3, 32, 32), freeze_backbone=True)
    optimizer = build.optimizer(optimizer_cfg(backbone={"lr": 0.01}), model)
    trainer = SimpleNamespace(model=model, epoch=0, world_size=1)
    callback = BackboneUnfreeze(epoch=1)
    callback.on_fit_start(trainer)

    def step() -> torch.Tensor:
        before = model.net.conv1.weight.detach().clone()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 0, 1])).backward()
        optimizer.step()
        return before

    callback.on_train_epoch_start(trainer)
    before = step()
    assert torch.equal(model.net.conv1.weight, before)  # epoch 0: still frozen
    trainer.epoch = 1
    callback.on_train_epoch_start(trainer)
    assert all(p.requires_grad for p in model.parameters())
    before = step()
    assert not torch.equal(model.net.conv1.weight, before)


def test_backbone_unfreeze_needs_a_model_with_a_backbone():
    with pytest.raises(UserError, match="model MLP has no backbone parameter group"):
        BackboneUnfreeze(epoch=1).on_fit_start(SimpleNamespace(model=MLP(2, (4,)), epoch=0, world_size=1))
