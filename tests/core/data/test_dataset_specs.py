"""Tests of the dataset table."""

from __future__ import annotations

import re

import pytest

from rkdsc_core.data import DATASETS, get_spec


class TestDatasetSpecs:
    def test_cifar10_classes_in_canonical_order(self) -> None:
        assert get_spec("cifar10").classes == (
            "airplane", "automobile", "bird", "cat", "deer",
            "dog", "frog", "horse", "ship", "truck",
        )  # fmt: skip

    def test_cifar100_has_100_unique_fine_classes_in_release_order(self) -> None:
        classes = get_spec("cifar100").classes
        assert len(set(classes)) == 100
        assert list(classes) == sorted(classes)
        assert classes[:3] == ("apple", "aquarium_fish", "baby")
        assert classes[-1] == "worm"

    def test_fashion_mnist_is_28x28_grayscale_with_debian_default(self) -> None:
        spec = get_spec("fashion-mnist")
        assert spec.image_shape == (28, 28, 1)
        assert spec.num_classes == 10
        assert str(spec.default_source) == "/usr/share/datasets/fashion-mnist"

    def test_official_sources_have_published_md5s(self) -> None:
        assert get_spec("cifar10").downloads[0].md5 == "c32a1d4ab5d03f1284b67883e8d87530"
        assert get_spec("cifar100").downloads[0].md5 == "03b5dce01913d631647c71ecec9e9cb8"
        for spec in DATASETS.values():
            for remote in spec.downloads:
                assert re.fullmatch(r"[0-9a-f]{32}", remote.md5)
                assert remote.url.endswith(remote.filename)

    def test_unknown_name_lists_known_names(self) -> None:
        with pytest.raises(ValueError, match="cifar10, cifar100, fashion-mnist"):
            get_spec("mnist")

    def test_source_help_names_url_and_env_var(self) -> None:
        help_text = get_spec("cifar10").source_help()
        assert "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in help_text
        assert "RKDSC_DATA_DIR" in help_text
        assert "--data" in help_text
