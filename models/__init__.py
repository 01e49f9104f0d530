"""Plain `nn.Module`s. Builders take `num_classes` and `input_shape` from the dataset's metadata."""
from models.mnist_cnn import MnistCNN

__all__ = ["MnistCNN"]
