"""Plain `nn.Module`s. Builders take `num_classes` and `input_shape` from the dataset's metadata."""
from decltrain.models.autoencoder import DenoisingAutoencoder
from decltrain.models.cifar_cnn import CifarCNN
from decltrain.models.dcgan import DCGAN
from decltrain.models.gpt import GPT
from decltrain.models.hf_causal_lm import HFCausalLM
from decltrain.models.mlp import MLP
from decltrain.models.mnist_cnn import MnistCNN
from decltrain.models.sequence_classifier import SequenceClassifier
from decltrain.models.timm_classifier import TimmClassifier
from decltrain.models.torchvision_classifier import TorchvisionClassifier
from decltrain.models.torchvision_detector import TorchvisionDetector
from decltrain.models.torchvision_segmenter import TorchvisionSegmenter
from decltrain.models.unet import UNet
from decltrain.models.vae import VAE

__all__ = ["DCGAN", "DenoisingAutoencoder", "GPT", "HFCausalLM", "MLP", "CifarCNN", "MnistCNN", "SequenceClassifier",
           "TimmClassifier", "TorchvisionClassifier", "TorchvisionDetector", "TorchvisionSegmenter", "UNet", "VAE"]
