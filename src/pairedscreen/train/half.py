"""float32 -> float16 at memory speed, bit-identical to numpy's ``astype(np.float16)``.

NumPy 2.0's float32 -> float16 cast runs a scalar loop (~0.25 G values/s here), which made the conversion of
each site a tenth of the crop export. :func:`to_float16` is the same conversion (numpy's
``npy_floatbits_to_halfbits``: round to nearest, ties to even; subnormals; overflow to inf; NaN payloads
kept) compiled by numba, which has no float16 type, so it works on the bit patterns.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _halfbits(f: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    for i in range(f.size):
        x = np.uint32(f[i])
        sgn = np.uint16((x & np.uint32(0x80000000)) >> np.uint32(16))
        exp = x & np.uint32(0x7F800000)
        if np.uint32(0x38000000) < exp < np.uint32(0x47800000):     # a normal half (the common case)
            hexp = np.uint16((exp - np.uint32(0x38000000)) >> np.uint32(13))
            sig = x & np.uint32(0x007FFFFF)
            if (sig & np.uint32(0x00003FFF)) != np.uint32(0x00001000):
                sig = sig + np.uint32(0x00001000)
            out[i] = np.uint16(sgn + np.uint16(hexp + np.uint16(sig >> np.uint32(13))))
        elif exp >= np.uint32(0x47800000):          # overflow, inf or NaN
            sig = x & np.uint32(0x007FFFFF)
            if exp == np.uint32(0x7F800000) and sig != 0:
                ret = np.uint16(0x7C00 + (sig >> np.uint32(13)))
                if ret == np.uint16(0x7C00):
                    ret = np.uint16(0x7C01)
                out[i] = np.uint16(sgn + ret)
            else:
                out[i] = np.uint16(sgn + np.uint16(0x7C00))
        elif exp < np.uint32(0x33000000):           # signed zero
            out[i] = sgn
        else:                                       # subnormal half
            e = exp >> np.uint32(23)
            sig = np.uint32(0x00800000) + (x & np.uint32(0x007FFFFF))
            sig = sig >> (np.uint32(113) - e)
            if (sig & np.uint32(0x00003FFF)) != np.uint32(0x00001000) or (x & np.uint32(0x000007FF)) != 0:
                sig = sig + np.uint32(0x00001000)
            out[i] = np.uint16(sgn + np.uint16(sig >> np.uint32(13)))


def to_float16(a: np.ndarray) -> np.ndarray:
    """``a.astype(np.float16)`` for a float32 array (other dtypes: numpy's cast)."""
    if a.dtype != np.float32:
        return a.astype(np.float16)
    src = np.ascontiguousarray(a)
    out = np.empty(src.shape, np.float16)
    _halfbits(src.reshape(-1).view(np.uint32), out.reshape(-1).view(np.uint16))
    return out
