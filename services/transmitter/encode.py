"""Client images -> uint8 pixels -> the frame's pilot and data symbols (run in a worker thread)."""

from __future__ import annotations

import io
import time
import warnings
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from rkdsc_core.data import to_tensor
from rkdsc_core.link import SemanticPipeline
from services._wire import to_wire
from services.pb import services_pb2

__all__ = ["EncodedFrame", "ImageError", "UInt8Image", "decode_image", "encode_image"]

UInt8Image = npt.NDArray[np.uint8]


class ImageError(ValueError):
    """A client image that cannot be used (maps to a frame ``ERROR`` ``INVALID_ARGUMENT:``)."""


class EncodedFrame(NamedTuple):
    """One image's frame, ready for a ``SymbolFrame``.

    Attributes:
        symbols: the ``L`` data symbols, ``8 L`` bytes of little-endian complex64.
        pilots: the ``P`` pilot symbols, ``8 P`` bytes.
        seconds: time spent decoding and encoding the image [s].
    """

    symbols: bytes
    pilots: bytes
    seconds: float


def decode_image(image: services_pb2.Image, *, max_bytes: int, max_side: int) -> UInt8Image:
    """A request's image -> ``[H, W, C]`` uint8 pixels, C = 3 (RGB) or 1 (gray raw images).

    Encoded images (PNG, JPEG, anything Pillow reads) are converted to RGB. Raw images must
    hold exactly ``height * width * channels`` bytes with 1 or 3 channels.

    Raises:
        ImageError: empty, undecodable, oversize or inconsistent, naming the field.
    """
    which = image.WhichOneof("data")
    if which == "encoded":
        data = image.encoded
        if not data:
            raise ImageError("image.encoded is empty")
        if len(data) > max_bytes:
            raise ImageError(f"image.encoded has {len(data)} bytes, more than {max_bytes}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", PILImage.DecompressionBombWarning)
                with PILImage.open(io.BytesIO(data)) as im:
                    w, h = im.size
                    _check_dims(h, w, max_side, "image.encoded")
                    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except ImageError:
            raise
        except UnidentifiedImageError as err:
            raise ImageError(
                "image.encoded is not a readable image (no format Pillow knows: PNG, JPEG, ...)"
            ) from err
        except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as err:
            raise ImageError(f"image.encoded is not a readable image ({err})") from err
        except PILImage.DecompressionBombWarning as err:
            raise ImageError(f"image.encoded is too large ({err})") from err
        return arr
    if which == "raw":
        raw = image.raw
        h, w, c = int(raw.height), int(raw.width), int(raw.channels)
        if c not in (1, 3):
            raise ImageError(f"image.raw.channels must be 1 or 3, got {c}")
        _check_dims(h, w, max_side, "image.raw")
        expected = h * w * c
        if expected > max_bytes:
            raise ImageError(f"image.raw has {expected} bytes, more than {max_bytes}")
        if len(raw.data) != expected:
            raise ImageError(
                f"image.raw.data must hold height*width*channels = {h}*{w}*{c} = {expected} "
                f"bytes, got {len(raw.data)}"
            )
        return np.frombuffer(raw.data, dtype=np.uint8).reshape(h, w, c).copy()
    raise ImageError("image is empty: set image.encoded or image.raw")


def _check_dims(h: int, w: int, max_side: int, name: str) -> None:
    if h < 1 or w < 1:
        raise ImageError(f"{name} must be at least 1x1 pixels, got {w}x{h}")
    if h > max_side or w > max_side:
        raise ImageError(f"{name} is {w}x{h} pixels; the largest side allowed is {max_side}")


def encode_image(
    pipeline: SemanticPipeline,
    pixels: UInt8Image | services_pb2.Image,
    *,
    snr_db: float,
    length: int,
    max_bytes: int,
    max_side: int,
) -> EncodedFrame:
    """Pixels (or a request image, decoded first) -> pilots + ``L`` symbols, under ``no_grad``.

    The image goes to the pipeline at its own size as ``[1, 3, H, W]`` float in [0, 1]
    (:func:`rkdsc_core.data.to_tensor`); the student resizes it to its ``input_size``
    itself, so ``pipeline.transmit(to_tensor(pixels[None]), snr_db, length)`` reproduces
    the frame exactly.

    Raises:
        ImageError: the image cannot be decoded (see :func:`decode_image`).
    """
    start = time.perf_counter()
    if isinstance(pixels, np.ndarray):
        arr = pixels
    else:
        arr = decode_image(pixels, max_bytes=max_bytes, max_side=max_side)
    device = pipeline.pilots.device
    with torch.no_grad():
        images = to_tensor(arr[None]).to(device)
        tx = pipeline.transmit(images, snr_db, length)
    p = pipeline.num_pilots
    frame = tx.frame[0]
    return EncodedFrame(
        symbols=to_wire(frame[p : p + length]),
        pilots=to_wire(frame[:p]),
        seconds=time.perf_counter() - start,
    )
