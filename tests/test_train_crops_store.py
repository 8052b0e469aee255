"""The crops' store, below the workflow: the float16 rounding equals numpy's cast bit for bit, and chunks
written directly (``crops._ChunkWriter``) read back through zarr as zarr's own writes do."""

from __future__ import annotations

import numpy as np
import pytest

from pairedscreen.train import crops
from pairedscreen.train.half import to_float16


def test_float16_equals_numpys_cast_bit_for_bit():
    """Every upper half of a float32 (sign, exponent, top 7 mantissa bits) with the low halves that decide
    rounding (ties, just below and above, the sticky bits of subnormals), NaN payloads, infinities, and
    10 million random bit patterns."""
    high = np.arange(2**16, dtype=np.uint32) << np.uint32(16)
    low = np.array([0x0000, 0x0001, 0x07FF, 0x0800, 0x0FFF, 0x1000, 0x1001, 0x17FF, 0x1FFF, 0x2000, 0x2FFF,
                    0x3000, 0x3001, 0x3FFF, 0x4000, 0x5000, 0x7FFF, 0x8000, 0x9000, 0xEFFF, 0xF000, 0xFFFF],
                   np.uint32)
    rng = np.random.default_rng(0)
    bits = np.concatenate([(high[:, None] | low[None, :]).ravel(),
                           rng.integers(0, 2**32, 10_000_000, dtype=np.uint64).astype(np.uint32)])
    x = bits.view(np.float32).reshape(-1, 16)   # any shape
    with np.errstate(all="ignore"):
        expected = x.astype(np.float16)
    got = to_float16(x)
    assert got.dtype == np.float16 and got.shape == x.shape
    assert np.array_equal(got.view(np.uint16), expected.view(np.uint16))
    # a non-contiguous view and a float64 input take the same path as numpy
    assert np.array_equal(to_float16(x[:, ::2]).view(np.uint16), expected[:, ::2].view(np.uint16))
    f64 = rng.random(1000)
    assert np.array_equal(to_float16(f64), f64.astype(np.float16))


def _array(tmp_path, dtype, shape=(10, 3, 8, 8), chunk=4):
    import zarr
    from zarr.codecs import BloscCodec

    root = zarr.open_group(store=str(tmp_path / "c.zarr"), mode="w", zarr_format=3)
    return root.create_array("crops", shape=shape, dtype=dtype, chunks=(chunk, *shape[1:]), fill_value=0.0,
                             compressors=BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"))


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_chunks_written_directly_read_back_through_zarr(tmp_path, dtype):
    """Three chunks of 4, 4 and a short 2 cells: zarr reads exactly what was written, and the short last
    chunk's padding is never seen (shape 10)."""
    import zarr

    rng = np.random.default_rng(1)
    data = rng.random((10, 3, 8, 8)).astype(dtype)
    arr = _array(tmp_path, dtype)
    with crops._ChunkWriter(arr) as writer:
        for i, start in enumerate(range(0, 10, 4)):
            writer.write(i, data[start:start + 4])
    back = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")["crops"]
    assert back.dtype == np.dtype(dtype) and back.shape == data.shape
    assert np.array_equal(back[:], data)
    assert np.array_equal(back[5:7, 1], data[5:7, 1])    # a read across chunks


def test_a_store_that_does_not_read_back_fails_the_export(tmp_path, monkeypatch):
    """The read-back check is live: if the frames written differed from what zarr decodes (here: the frame
    of other values), the writer raises instead of leaving the store."""
    arr = _array(tmp_path, "float32")
    data = np.ones((4, 3, 8, 8), np.float32)
    writer = crops._ChunkWriter(arr)
    encode = writer.codec.encode
    monkeypatch.setattr(writer.codec, "encode", lambda a: encode(np.asarray(a) * 2), raising=False)
    with pytest.raises(RuntimeError, match="do not read back through zarr"), writer:
        writer.write(0, data)


def test_a_failed_export_stops_its_writer_and_skips_the_check(tmp_path):
    arr = _array(tmp_path, "float32")
    writer = crops._ChunkWriter(arr)
    with pytest.raises(KeyError), writer:
        writer.write(0, np.ones((4, 3, 8, 8), np.float32))
        raise KeyError("a failure while cutting")
    assert writer.pool._shutdown


def test_unsupported_stores_are_refused(tmp_path):
    import zarr

    root = zarr.open_group(store=str(tmp_path / "z.zarr"), mode="w", zarr_format=3)
    arr = root.create_array("x", shape=(4, 4), dtype="float32", chunks=(2, 4), compressors=None)
    with pytest.raises(TypeError, match="one Blosc codec"):
        crops._ChunkWriter(arr)


def test_chunks_are_written_through_whole_even_when_the_os_writes_short(tmp_path, monkeypatch):
    """``write_through`` loops until every byte is written (``os.write`` may write fewer than asked), and each
    chunk file is flushed (``fdatasync``) and released from the page cache before the writer's block ends;
    the flushed file descriptors are exactly the chunk files'."""
    import os

    import zarr

    real_write, flushed, advised = os.write, [], []
    monkeypatch.setattr(os, "write", lambda fd, b: real_write(fd, bytes(b[:100])))   # short writes
    sync = os.fdatasync if hasattr(os, "fdatasync") else os.fsync
    monkeypatch.setattr(os, "fdatasync" if hasattr(os, "fdatasync") else "fsync",
                        lambda fd: (flushed.append(os.readlink(f"/proc/self/fd/{fd}")), sync(fd))[1])
    if hasattr(os, "posix_fadvise"):
        real_advise = os.posix_fadvise
        monkeypatch.setattr(os, "posix_fadvise",
                            lambda fd, o, n, a: (advised.append(a), real_advise(fd, o, n, a))[1])
    rng = np.random.default_rng(2)
    data = rng.random((10, 3, 8, 8)).astype("float32")
    arr = _array(tmp_path, "float32")
    with crops._ChunkWriter(arr) as writer:
        for i, start in enumerate(range(0, 10, 4)):
            writer.write(i, data[start:start + 4])
    back = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")["crops"]
    assert np.array_equal(back[:], data)
    chunk_dir = tmp_path / "c.zarr" / "crops" / "c"
    chunk_files = sorted(os.path.realpath(p) for p in chunk_dir.rglob("*") if p.is_file())
    assert len(chunk_files) == 3 and sorted(flushed) == chunk_files
    if hasattr(os, "posix_fadvise"):
        assert advised == [os.POSIX_FADV_DONTNEED] * 3
