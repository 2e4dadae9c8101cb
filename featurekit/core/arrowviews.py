"""A fixed-width Arrow array's buffers seen as numpy arrays, in place (no copy).

The result hash and the label-order gathers both read columns through these views: the
validity bitmap unpacked to one byte per value, and the values at the array's offset.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = ["unpacked_validity", "value_view"]


def unpacked_validity(array: pa.Array) -> np.ndarray:
    """One ``uint8`` per value, 1 where it is valid, from ``array``'s validity bitmap
    (which it must have: an array with nulls), starting at the array's offset."""
    bits = np.frombuffer(array.buffers()[0], dtype=np.uint8)
    end = array.offset + len(array)
    return np.unpackbits(bits, count=end, bitorder="little")[array.offset :]


def value_view(array: pa.Array, dtype: np.dtype) -> np.ndarray:
    """``array``'s values as ``dtype`` (as wide as its Arrow type), null slots as they are."""
    count = array.offset + len(array)
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=count)[array.offset :]
