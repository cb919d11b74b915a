"""Datasets as tensors, batch augmentation, and data lookup."""

from nasrl.data.augment import random_crop, random_erasing, random_flip
from nasrl.data.images import AugmentSpec, DataError, ImageData, list_datasets, load_images
from nasrl.data.paths import find_data_dir, find_file

__all__ = [
    "AugmentSpec",
    "DataError",
    "ImageData",
    "find_data_dir",
    "find_file",
    "list_datasets",
    "load_images",
    "random_crop",
    "random_erasing",
    "random_flip",
]
