"""Array aliases shared by the data decoders (uint8 images, int64 labels)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["Int64Array", "SplitArrays", "UInt8Array"]

UInt8Array = npt.NDArray[np.uint8]
Int64Array = npt.NDArray[np.int64]


class SplitArrays(NamedTuple):
    """One decoded split: ``images`` ``[N, H, W, C]`` uint8 and ``labels`` ``[N]`` int64."""

    images: UInt8Array
    labels: Int64Array
