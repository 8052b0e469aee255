"""Numba kernels shared by several feature families (private; compiled on first call)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _edt_1d(f, n, d, v, z):
    """Felzenszwalb-Huttenlocher lower envelope: d[q] = min_p (q - p)^2 + f[p] (exact in float).

    Squared 1-D distance transform of ``f[:n]`` into ``d[:n]``; entries ``>= 1e300`` count as
    infinite (no parabola). ``v`` (int64) and ``z`` (float) are scratch of sizes ``n`` and ``n + 1``.
    """
    k = 0
    first = -1
    for q in range(n):
        if f[q] < 1e300:
            first = q
            break
    if first < 0:
        for q in range(n):
            d[q] = f[q]
        return
    v[0] = first
    z[0] = -np.inf
    z[1] = np.inf
    for q in range(first + 1, n):
        if f[q] >= 1e300:
            continue
        s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2.0 * q - 2.0 * v[k])
        while s <= z[k]:
            k -= 1
            s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2.0 * q - 2.0 * v[k])
        k += 1
        v[k] = q
        z[k] = s
        z[k + 1] = np.inf
    k = 0
    for q in range(n):
        while z[k + 1] < q:
            k += 1
        dq = q - v[k]
        d[q] = dq * dq + f[v[k]]


# sign bit and all-ones of the 32- and 64-bit IEEE patterns, as uint64 (:func:`order_keys`)
SIGN32 = np.uint64(1 << 31)
MASK32 = np.uint64((1 << 32) - 1)
SIGN64 = np.uint64(1 << 63)
MASK64 = np.uint64((1 << 64) - 1)


@numba.njit(cache=True, nogil=True)
def order_keys(bits, cnt, sign, mask, keys):
    """Order-preserving unsigned keys of the IEEE floats whose bit patterns are bits[:cnt] (uint32
    for float32, uint64 for float64; ``sign`` its sign bit, ``mask`` its all-ones): the sign bit
    set for non-negative values, all bits flipped for negative ones, so the keys sort as the
    values do (finite values; -0.0 is keyed as +0.0, so equal values have equal keys)."""
    for i in range(cnt):
        u = np.uint64(bits[i])
        if u == sign:
            u = np.uint64(0)
        if u & sign:
            keys[i] = ~u & mask
        else:
            keys[i] = u | sign


@numba.njit(cache=True, nogil=True)
def order_values(keys, cnt, sign, mask, bits):
    """Inverse of :func:`order_keys`: bits[:cnt] = the bit patterns of keys[:cnt]."""
    for i in range(cnt):
        k = keys[i]
        if k & sign:
            bits[i] = k ^ sign
        else:
            bits[i] = ~k & mask


@numba.njit(cache=True, nogil=True, inline="always")
def radix_sort(keys, payload, n, n_bytes, tmp_keys, tmp_payload, hist, carry):
    """Stable LSD radix sort of the uint64 ``keys[:n]`` in place, on their low ``n_bytes`` bytes.

    With ``carry`` ``payload[:n]`` (e.g. the original positions) moves with its key;
    without it ``payload``/``tmp_payload`` are not touched. A byte on which every key agrees is
    skipped (no pass). ``tmp_keys``/``tmp_payload`` are scratch of length >= n, ``hist`` int64 of
    256. Inlined (``carry`` is a constant at each call site, so its branches fold away).
    """
    src_k = keys
    dst_k = tmp_keys
    src_p = payload
    dst_p = tmp_payload
    swapped = False
    for p in range(n_bytes):
        shift = np.uint64(8 * p)
        for b in range(256):
            hist[b] = 0
        for t in range(n):
            hist[(src_k[t] >> shift) & np.uint64(255)] += 1
        skip = False
        for b in range(256):
            if hist[b] == n:
                skip = True
                break
            if hist[b] != 0:
                break
        if skip:
            continue
        acc = 0
        for b in range(256):
            c = hist[b]
            hist[b] = acc
            acc += c
        for t in range(n):
            kk = src_k[t]
            d = (kk >> shift) & np.uint64(255)
            pos = hist[d]
            hist[d] = pos + 1
            dst_k[pos] = kk
            if carry:
                dst_p[pos] = src_p[t]
        src_k, dst_k = dst_k, src_k
        if carry:
            src_p, dst_p = dst_p, src_p
        swapped = not swapped
    if swapped:  # an odd number of passes: the sorted keys are in the scratch
        for t in range(n):
            keys[t] = src_k[t]
            if carry:
                payload[t] = src_p[t]
