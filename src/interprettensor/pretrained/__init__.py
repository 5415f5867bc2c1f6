"""Pretrained networks shipped with the package (see README.md in this folder for provenance)."""

from __future__ import annotations

from importlib import resources

from ..original.modules import AvgPool, Convolution
from ..original.sequential import Sequential

__all__ = ["mnist_cnn", "MNIST_CNN_WEIGHTS"]

MNIST_CNN_WEIGHTS = "mnist_convolutional_model.npy"


def weights_path() -> str:
    """Filesystem path of the original project's pretrained MNIST CNN weights."""
    return str(resources.files(__package__) / MNIST_CNN_WEIGHTS)


def mnist_cnn_architecture() -> Sequential:
    """The original ``mnist_convolutional.py`` network (untrained): input (N, 32, 32, 1) in [-1, 1]."""
    return Sequential([
        Convolution(10, input_depth=1, input_dim=32, kernel_size=5, stride_size=1, act="relu", pad="VALID"),
        AvgPool(2, pad="SAME"),
        Convolution(25, kernel_size=5, stride_size=1, act="relu", pad="VALID"),
        AvgPool(2, pad="SAME"),
        Convolution(100, kernel_size=4, stride_size=1, act="relu", pad="VALID"),
        AvgPool(2, pad="SAME"),
        Convolution(10, kernel_size=1, stride_size=1, pad="VALID"),
    ], name="mnist_cnn")


def mnist_cnn() -> Sequential:
    """The original project's pretrained MNIST CNN with its weights loaded.

    Input: digits in a 28x28 frame padded to 32x32 and scaled to [-1, 1] (see
    :func:`interprettensor.data.to_pretrained_input`); output: logits of shape (N, 1, 1, 10).
    """
    net = mnist_cnn_architecture()
    net.load_numpy(weights_path())
    return net
