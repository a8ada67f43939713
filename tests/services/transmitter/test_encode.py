"""Request images -> pixels: formats, validation and limits."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from services.pb import services_pb2
from services.transmitter.encode import ImageError, decode_image

LIMITS = {"max_bytes": 1 << 20, "max_side": 256}


def encoded(mode: str, size: tuple[int, int] = (8, 6), fmt: str = "PNG") -> services_pb2.Image:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format=fmt)
    return services_pb2.Image(encoded=buf.getvalue())


class TestDecodeImage:
    @pytest.mark.parametrize(
        ("mode", "fmt"), [("RGB", "PNG"), ("L", "PNG"), ("RGBA", "PNG"), ("RGB", "JPEG")]
    )
    def test_encoded_images_become_rgb(self, mode: str, fmt: str) -> None:
        arr = decode_image(encoded(mode, fmt=fmt), **LIMITS)
        assert arr.shape == (6, 8, 3) and arr.dtype == np.uint8

    def test_raw_gray_keeps_one_channel(self) -> None:
        raw = services_pb2.RawImage(height=2, width=3, channels=1, data=bytes(range(6)))
        arr = decode_image(services_pb2.Image(raw=raw), **LIMITS)
        assert arr.shape == (2, 3, 1) and arr[1, 2, 0] == 5

    def test_raw_is_row_major_hwc(self) -> None:
        data = bytes(range(2 * 2 * 3))
        raw = services_pb2.RawImage(height=2, width=2, channels=3, data=data)
        arr = decode_image(services_pb2.Image(raw=raw), **LIMITS)
        assert arr[0, 1].tolist() == [3, 4, 5]

    @pytest.mark.parametrize(
        ("image", "needle"),
        [
            (services_pb2.Image(), "empty"),
            (services_pb2.Image(encoded=b""), "empty"),
            (services_pb2.Image(encoded=b"\\x89PNG broken"), "not a readable image"),
            (
                services_pb2.Image(raw=services_pb2.RawImage(height=0, width=3, channels=3)),
                "at least 1x1",
            ),
            (
                services_pb2.Image(
                    raw=services_pb2.RawImage(height=300, width=1, channels=1, data=b"0" * 300)
                ),
                "largest side",
            ),
        ],
    )
    def test_bad_images_raise_image_error(self, image: services_pb2.Image, needle: str) -> None:
        with pytest.raises(ImageError, match=needle):
            decode_image(image, **LIMITS)

    def test_oversize_encoded_image_is_refused(self) -> None:
        with pytest.raises(ImageError, match="largest side"):
            decode_image(encoded("RGB", (300, 2)), **LIMITS)
        with pytest.raises(ImageError, match="more than"):
            decode_image(encoded("RGB"), max_bytes=10, max_side=256)
