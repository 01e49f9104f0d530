"""`dataset=hf dataset.streaming=true`: the training split as a stream, exact mid-epoch resume, equal DDP shares."""
from __future__ import annotations

import logging

import pytest
import torch

from decltrain.datasets.hf import build
from decltrain.trainer.engine.data import train_loader
from decltrain.trainer.errors import UserError
from tests.helpers.hf import write_image_parquet

pytest.importorskip("datasets")  # Hugging Face's, installed with the `hf` extra


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    """90 rows streamed: 10 carved for val, 10 for test, 64 read per epoch, flips drawn in 2 loader workers."""
    from torchvision.transforms import v2
    parquet = write_image_parquet(tmp_path_factory.mktemp("stream") / "images.parquet", count=90)
    return build("parquet", data_files=str(parquet), columns={"image": "img", "label": "label"}, mean=[0.5] * 3,
                 std=[0.5] * 3, streaming=True, samples_per_epoch=64, eval_samples=10, shuffle_buffer=16,
                 train_transforms=[v2.RandomHorizontalFlip()], num_workers=2, batch_size=8, persistent_workers=False)


def batches(splits, epoch: int, skip: int = 0, world: int = 1, rank: int = 0) -> list:
    loader = train_loader(splits.train, splits.loader, 0, torch.device("cpu"), num_replicas=world, rank=rank)
    loader.start_epoch(epoch, skip)
    return list(loader)


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


def test_val_and_test_are_carved_from_the_stream_start(streamed):
    assert (len(streamed.val), len(streamed.test)) == (10, 10)
    assert streamed.class_names == ["cat", "dog", "eel"] and streamed.input_shape == (3, 8, 8)


def test_an_epoch_resumed_mid_way_sees_exactly_the_rest_of_the_uninterrupted_epoch(streamed, caplog):
    whole = batches(streamed, epoch=1)
    assert len(whole) == 8 and not same(whole, batches(streamed, epoch=2))  # another epoch, another order
    with caplog.at_level(logging.INFO, logger="decltrain"):
        assert same(batches(streamed, epoch=1, skip=3), whole[3:])
        assert same(batches(streamed, epoch=1, skip=5), whole[5:])  # resumed a second time, further on
    assert "epoch 2 resumes after 24 samples of this rank" in caplog.text


def test_two_ranks_get_equal_shares(streamed):
    shares = [batches(streamed, epoch=0, world=2, rank=rank) for rank in (0, 1)]
    assert [len(share) for share in shares] == [4, 4]


def test_more_samples_per_epoch_than_the_stream_holds_is_one_line(tmp_path):
    parquet = write_image_parquet(tmp_path / "images.parquet", count=30)
    splits = build("parquet", data_files=str(parquet), columns={"image": "img", "label": "label"}, mean=[0.5] * 3,
                   std=[0.5] * 3, streaming=True, samples_per_epoch=100, eval_samples=5, num_workers=0)
    with pytest.raises(UserError, match=r"samples_per_epoch=100 is more than the stream holds \(rank 0 ran out after 20"):
        batches(splits, epoch=0)
