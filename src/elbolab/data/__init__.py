"""Data: the embedded MNIST default, IDX/CIFAR readers, verified downloads, image folders, toy distributions.

Every image dataset is an :class:`ImageDataset` holding ``images: (N, C, H, W)`` (uint8 for 8-bit data) and
``labels: (N,)`` int64 (-1 = unlabelled); ``ds.batch(idx, generator)`` returns float ``(B, C, H, W)`` in
[-1, 1] (optionally uniformly dequantised) and ``(B,)`` labels. See :func:`load_dataset` for the names.

Bundled data: the MNIST test set (``embedded/t10k-*-ubyte.gz``, 10,000 images) by Yann LeCun, Corinna Cortes
and Christopher J.C. Burges, "The MNIST database of handwritten digits", CC BY-SA 3.0.
"""

from elbolab.data.cifar import CIFAR10_CLASSES, decode_cifar10_records, load_cifar10, load_cifar10_subset, read_cifar10_tar
from elbolab.data.datasets import ImageDataset, LabelledDataset, PointDataset
from elbolab.data.download import (
    ChecksumStatus,
    FileStatus,
    RemoteFile,
    RemoteSource,
    VerifiedFile,
    cache_dir,
    cache_root,
    check_files,
    download_file,
    fetch_file,
    md5_file,
    mirror_bases,
    search_dirs,
)
from elbolab.data.errors import DataError
from elbolab.data.idx import read_idx, write_idx
from elbolab.data.imagefolder import find_images, load_image_folder
from elbolab.data.mnist import FASHION_MNIST, FASHION_MNIST_CLASSES, MNIST, MNIST_CLASSES, load_embedded, load_idx_source
from elbolab.data.registry import (
    DatasetInfo,
    DatasetName,
    SplitInfo,
    dataset_info,
    dataset_names,
    download_dataset,
    load_dataset,
)
from elbolab.data.toy import (
    Checkerboard,
    GaussianMixture,
    Mixture1D,
    SwissRoll,
    ToyName,
    TwoMoons,
    load_toy,
    load_toy_dataset,
    make_toy,
)
from elbolab.data.transforms import BIN_WIDTH, convert_channels, dequantize, resize_uint8, to_float, to_uint8

__all__ = [
    "BIN_WIDTH", "CIFAR10_CLASSES", "Checkerboard", "ChecksumStatus", "DataError", "DatasetInfo", "DatasetName",
    "FASHION_MNIST", "FASHION_MNIST_CLASSES", "FileStatus", "GaussianMixture", "ImageDataset", "LabelledDataset",
    "MNIST", "MNIST_CLASSES", "Mixture1D", "PointDataset", "RemoteFile", "RemoteSource", "SplitInfo", "SwissRoll",
    "ToyName", "TwoMoons", "VerifiedFile", "cache_dir", "cache_root", "check_files", "convert_channels",
    "dataset_info", "dataset_names", "download_dataset", "decode_cifar10_records", "dequantize", "download_file", "fetch_file",
    "find_images", "load_cifar10", "load_cifar10_subset", "load_dataset", "load_embedded", "load_idx_source",
    "load_image_folder", "load_toy", "load_toy_dataset", "make_toy", "md5_file", "mirror_bases", "read_cifar10_tar",
    "read_idx", "resize_uint8", "search_dirs", "to_float", "to_uint8", "write_idx",
]
