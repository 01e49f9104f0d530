"""The built-in tasks' metrics against hand-computed values, accumulated over batches of unequal
size (the model is the identity: a batch's inputs are its outputs); the confusion image."""
from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from decltrain.trainer.engine.task import Task
from decltrain.trainer.tasks.classification import Classification
from decltrain.trainer.tasks.regression import Regression
from decltrain.trainer.tracking.loggers import TensorBoardLogger


def accumulate(task: Task, batches: list[tuple[torch.Tensor, torch.Tensor]], confusion: bool = False):
    """(computed metrics but the loss, the loss) over `batches` of (outputs, targets)."""
    metrics = task.metrics("test" if confusion else "val")
    for batch in batches:
        task.update(metrics, nn.Identity().eval(), batch)
    computed = metrics.compute()
    return {name: value for name, value in computed.items() if name != "loss"}, float(computed["loss"])


def one_hot_logits(predictions: list[int], classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(predictions), classes).float() * 5


def test_multiclass_metrics_match_hand_computed_values():
    # targets 0 0 0 1 1 2 | predictions 0 0 1 1 2 2, in batches of 4 and 2
    targets, predictions = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]
    logits = one_hot_logits(predictions, 3)
    task = Classification(nn.CrossEntropyLoss(), "multiclass", 3, ["cat", "dog", "eel"])
    computed, _ = accumulate(task, [(logits[:4], torch.tensor(targets[:4])), (logits[4:], torch.tensor(targets[4:]))],
                             confusion=True)
    precision = [2 / 2, 1 / 2, 1 / 2]  # per class: correct / predicted
    recall = [2 / 3, 1 / 2, 1 / 1]  # per class: correct / true
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall)]
    assert float(computed["acc"]) == pytest.approx(4 / 6)
    assert float(computed["precision"]) == pytest.approx(sum(precision) / 3)
    assert float(computed["recall"]) == pytest.approx(sum(recall) / 3)
    assert float(computed["f1"]) == pytest.approx(sum(f1) / 3)
    assert computed["confusion_matrix"].tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_loss_is_averaged_per_sample_over_unequal_batches():
    task = Regression(nn.MSELoss())
    outputs = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]])
    targets = torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0])  # one error of 5 in the 1-sample batch
    computed, loss = accumulate(task, [(outputs[:4], targets[:4]), (outputs[4:], targets[4:])])
    assert loss == pytest.approx(25 / 5)  # not the mean of the two batch means (12.5)
    assert float(computed["mse"]) == pytest.approx(25 / 5)
    assert float(computed["mae"]) == pytest.approx(5 / 5)


def test_binary_metrics_use_a_single_logit():
    task = Classification(nn.BCEWithLogitsLoss(), "binary", 1)
    logits = torch.tensor([[3.0], [-3.0], [2.0], [-1.0], [4.0]])  # predictions 1 0 1 0 1
    targets = torch.tensor([1, 0, 0, 1, 1])
    computed, loss = accumulate(task, [(logits[:3], targets[:3]), (logits[3:], targets[3:])], confusion=True)
    assert float(computed["acc"]) == pytest.approx(3 / 5)
    assert float(computed["precision"]) == pytest.approx(2 / 3)
    assert float(computed["recall"]) == pytest.approx(2 / 3)
    assert computed["confusion_matrix"].tolist() == [[1, 1], [1, 2]]
    expected = nn.functional.binary_cross_entropy_with_logits(logits.squeeze(1), targets.float())
    assert loss == pytest.approx(float(expected))


def test_summarize_keeps_scalars_and_draws_the_confusion_matrix():
    task = Classification(nn.CrossEntropyLoss(), "multiclass", 3, ["cat", "dog", "eel"])
    computed, _ = accumulate(task, [(one_hot_logits([0, 1, 2, 2], 3), torch.tensor([0, 1, 2, 1]))], confusion=True)
    scalars, images = task.summarize(computed)
    assert set(scalars) == {"acc", "precision", "recall", "f1"} and scalars["acc"] == pytest.approx(0.75)
    image = images["confusion_matrix"]
    assert image.dtype == torch.uint8 and image.shape[0] == 3 and image.shape[1] > 60 and image.shape[2] > 60
    assert len(image.unique()) > 2  # drawn: shaded cells and text, not a blank canvas


def test_regression_has_no_confusion_matrix():
    computed, _ = accumulate(Regression(nn.MSELoss()), [(torch.ones(2, 1), torch.zeros(2))],
                             confusion=True)
    assert set(computed) == {"mse", "mae"}


def test_multilabel_metrics_are_macro_means_and_per_label_values():
    # labels a, b, c; the logits' signs are the predictions
    targets = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]])
    logits = torch.tensor([[3.0, -3.0, 2.0], [-2.0, 1.0, -1.0], [1.0, -1.0, -2.0], [-1.0, -2.0, 4.0]])
    task = Classification(nn.BCEWithLogitsLoss(), "multilabel", 3, ["a", "b", "c"])
    computed, loss = accumulate(task, [(logits[:3], targets[:3]), (logits[3:], targets[3:])])
    scalars, _ = task.summarize(computed)
    f1 = {"a": 1.0, "b": 2 * 1 * 0.5 / 1.5, "c": 2 * 1 * (2 / 3) / (1 + 2 / 3)}  # precision 1, recall 1 / 0.5 / 2/3
    assert {label: scalars[f"f1_{label}"] for label in f1} == pytest.approx(f1)
    assert scalars["f1"] == pytest.approx(sum(f1.values()) / 3)
    # every label's positives have the highest logits: the ranking is perfect even where the 0 threshold is not
    assert [scalars[f"map_{label}"] for label in "abc"] == pytest.approx([1.0, 1.0, 1.0])
    assert scalars["acc"] == pytest.approx((4 / 4 + 3 / 4 + 3 / 4) / 3)
    expected = nn.functional.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none").mean(1)
    assert loss == pytest.approx(float(expected.mean()))


def test_classification_refuses_other_targets_and_cross_entropy_for_labels():
    from decltrain.trainer.errors import UserError

    with pytest.raises(UserError, match="dataset gives regression ones; use task=regression"):
        Classification(nn.MSELoss(), "regression", 1)
    with pytest.raises(UserError, match="loss=bce_with_logits"):
        Classification(nn.CrossEntropyLoss(), "multilabel", 3)


def test_tensorboard_logger_writes_images(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.log_image("test/confusion_matrix", torch.full((3, 8, 10), 200, dtype=torch.uint8), step=7)
    logger.close()
    events = EventAccumulator(str(tmp_path)).Reload()
    (image,) = events.Images("test/confusion_matrix")
    assert (image.step, image.width, image.height) == (7, 10, 8)


def test_the_confusion_image_fits_a_tensorboard_card_and_names_each_class_once():
    from decltrain.trainer.engine.confusion import confusion_image, row_labels

    mnist = [f"{i} - {name}" for i, name in enumerate(["zero", "one", "two", "three", "four", "five", "six",
                                                        "seven", "eight", "nine"])]
    assert row_labels(mnist, 10)[:2] == ["0 - zero", "1 - one"]
    assert row_labels(["cat", "dog"], 2) == ["0 cat", "1 dog"] and row_labels([], 2) == ["0", "1"]
    counts = torch.full((10, 10), 3) + torch.eye(10, dtype=torch.long) * 1100  # four-digit diagonal
    image = confusion_image(counts, mnist)
    assert image.shape[2] <= 500 and image.shape[1] <= 450, image.shape  # about a card's width: shown near full size
