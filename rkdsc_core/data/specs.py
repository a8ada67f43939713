"""The dataset table: class lists, image shapes and official sources of each dataset by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DEBIAN_DIR",
    "SPLITS",
    "DatasetSpec",
    "RemoteFile",
    "SourceFormat",
    "Split",
    "get_spec",
]

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")

SourceFormat = Literal["imagefolder", "cifar-binary", "idx"]
"""``imagefolder``: ``train/<class>/*``, ``test/<class>/*`` (or its .tar.gz);
``cifar-binary``: the official CIFAR binary release; ``idx``: (Fashion-)MNIST IDX files."""

FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the four ``*-ubyte.gz`` files."""

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

CIFAR100_CLASSES: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip
"""The 100 fine labels of CIFAR-100 in label order 0..99 (alphabetical, as in the release)."""

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "t-shirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)
"""Fashion-MNIST labels 0..9 ("T-shirt/top", ..., "Ankle boot"), spelt as folder names."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of an official release: where it lives and its published MD5."""

    url: str
    filename: str
    md5: str


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is and where it comes from.

    Attributes:
        name: the name used everywhere (``cifar10``, ``cifar100``, ``fashion-mnist``).
        title: the human name used in messages (``CIFAR-10``).
        classes: class names in label order; ``labels`` index into this tuple.
        image_shape: ``(H, W, C)`` of every image [pixels, pixels, channels].
        split_sizes: ``(train, test)`` image counts of the official release.
        formats: the source formats this dataset can be read from.
        downloads: the official release files, with their published MD5s.
        source_names: file/folder names searched for inside a data folder, in order.
        default_source: used when no source is given (``None``: a source is required).
        homepage: the dataset's home page.
    """

    name: str
    title: str
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]
    split_sizes: tuple[int, int]
    formats: tuple[SourceFormat, ...]
    downloads: tuple[RemoteFile, ...]
    source_names: tuple[str, ...]
    default_source: Path | None
    homepage: str

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def split_size(self, split: Split) -> int:
        """Image count of ``split`` in the official release."""
        return self.split_sizes[SPLITS.index(split)]

    def source_help(self) -> str:
        """One sentence: which sources are accepted and where to get one."""
        expected: list[str] = []
        if "imagefolder" in self.formats:
            expected.append(
                "an image-folder tree (train/<class>/*, test/<class>/*, class folders named "
                f"{', '.join(self.classes[:3])}, ...) or its .tar.gz"
            )
        if "cifar-binary" in self.formats:
            archive = self.downloads[0]
            folder = "cifar-10-batches-bin" if self.name == "cifar10" else "cifar-100-binary"
            expected.append(
                f"the official {archive.filename} (or its extracted {folder}/) from {archive.url}"
            )
        if "idx" in self.formats:
            expected.insert(
                0,
                "a folder with the IDX files train-images-idx3-ubyte[.gz], "
                "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
                f"t10k-labels-idx1-ubyte[.gz] (Debian: apt-get install dataset-fashion-mnist "
                f"puts them in {FASHION_MNIST_DEBIAN_DIR}; or from {self.homepage})",
            )
        return (
            f"expected {', or '.join(expected)}; "
            f"`rkdsc data download --dataset {self.name}` fetches the official release; "
            "set RKDSC_DATA_DIR or pass --data"
        )


_TORONTO = "https://www.cs.toronto.edu/~kriz"
_ZALANDO = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"

DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        name="cifar10",
        title="CIFAR-10",
        classes=CIFAR10_CLASSES,
        image_shape=(32, 32, 3),
        split_sizes=(50_000, 10_000),
        formats=("imagefolder", "cifar-binary"),
        downloads=(
            RemoteFile(
                f"{_TORONTO}/cifar-10-binary.tar.gz",
                "cifar-10-binary.tar.gz",
                "c32a1d4ab5d03f1284b67883e8d87530",
            ),
        ),
        source_names=(
            "cifar-10-batches-bin",
            "cifar-10-binary.tar.gz",
            "cifar10-jpeg.tar.gz",
            "cifar10.tar.gz",
            "cifar10",
        ),
        default_source=None,
        homepage=f"{_TORONTO}/cifar.html",
    ),
    "cifar100": DatasetSpec(
        name="cifar100",
        title="CIFAR-100",
        classes=CIFAR100_CLASSES,
        image_shape=(32, 32, 3),
        split_sizes=(50_000, 10_000),
        formats=("imagefolder", "cifar-binary"),
        downloads=(
            RemoteFile(
                f"{_TORONTO}/cifar-100-binary.tar.gz",
                "cifar-100-binary.tar.gz",
                "03b5dce01913d631647c71ecec9e9cb8",
            ),
        ),
        source_names=(
            "cifar-100-binary",
            "cifar-100-binary.tar.gz",
            "cifar100-jpeg.tar.gz",
            "cifar100.tar.gz",
            "cifar100",
        ),
        default_source=None,
        homepage=f"{_TORONTO}/cifar.html",
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        title="Fashion-MNIST",
        classes=FASHION_MNIST_CLASSES,
        image_shape=(28, 28, 1),
        split_sizes=(60_000, 10_000),
        formats=("idx", "imagefolder"),
        downloads=(
            RemoteFile(
                f"{_ZALANDO}/train-images-idx3-ubyte.gz",
                "train-images-idx3-ubyte.gz",
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            ),
            RemoteFile(
                f"{_ZALANDO}/train-labels-idx1-ubyte.gz",
                "train-labels-idx1-ubyte.gz",
                "25c81989df183df01b3e8a0aad5dffbe",
            ),
            RemoteFile(
                f"{_ZALANDO}/t10k-images-idx3-ubyte.gz",
                "t10k-images-idx3-ubyte.gz",
                "bef4ecab320f06d8554ea6380940ec79",
            ),
            RemoteFile(
                f"{_ZALANDO}/t10k-labels-idx1-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
        ),
        source_names=("fashion-mnist", "fashion_mnist"),
        default_source=FASHION_MNIST_DEBIAN_DIR,
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    ),
}
"""Every dataset by name."""


def get_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; raises ``ValueError`` listing the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}"
        ) from None
