"""Dataset builders. Each returns a `DataSplits`: train/val/test plus the metadata models need."""
from decltrain.datasets.base import DataSplits, LoaderSettings

__all__ = ["DataSplits", "LoaderSettings"]
