"""Plain `nn.Module`s. Builders take `num_classes` and `input_shape` from the dataset's metadata."""
from models.cifar_cnn import CifarCNN
from models.mlp import MLP
from models.mnist_cnn import MnistCNN
from models.sequence_classifier import SequenceClassifier
from models.torchvision_classifier import TorchvisionClassifier

__all__ = ["MLP", "CifarCNN", "MnistCNN", "SequenceClassifier", "TorchvisionClassifier"]
