"""image_decoder: PNG (every filter type), BMP, PNM and TIFF streams written by independent
encoders here decode to the original pixels, in each pixel format; unsupported and corrupt
streams; inference."""
from __future__ import annotations

import numpy as np
import pytest

from irgraph import TensorType
from irgraph import dtype as dt
from irgraph.errors import ShapeError

from oprun import infer, run

rng = np.random.default_rng(0)


IMG = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def _png(img: np.ndarray, filters) -> bytes:
    """A PNG written with the given filter type per row (an encoder independent of the decoder)."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    h, w, c = img.shape
    rows = img.reshape(h, w * c).astype(np.int32)
    raw = b""
    for y in range(h):
        cur, prev = rows[y], rows[y - 1] if y else np.zeros(w * c, np.int32)
        left = np.concatenate([np.zeros(c, np.int32), cur[:-c]])
        corner = np.concatenate([np.zeros(c, np.int32), prev[:-c]])
        f = filters[y % len(filters)]
        if f == 0:
            pred = np.zeros_like(cur)
        elif f == 1:
            pred = left
        elif f == 2:
            pred = prev
        elif f == 3:
            pred = (left + prev) // 2
        else:
            p = left + prev - corner
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - corner)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, corner))
        raw += bytes([f]) + ((cur - pred) % 256).astype(np.uint8).tobytes()
    head = struct.pack(">IIBBBBB", w, h, 8, {1: 0, 3: 2, 4: 6}[c], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _bmp(img: np.ndarray) -> bytes:
    import struct
    h, w, _ = img.shape
    stride = (w * 3 + 3) // 4 * 4
    rows = b"".join(img[y, :, ::-1].tobytes().ljust(stride, b"\0") for y in range(h - 1, -1, -1))
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(rows), 0, 0, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + len(rows), 0, 0, 54) + info + rows


def _tiff(img: np.ndarray) -> bytes:
    import struct
    h, w, c = img.shape
    tags = [(256, 4, w), (257, 4, h), (259, 3, 1), (262, 3, 2), (273, 4, 8 + 2 + 12 * 7 + 4),
            (277, 3, c), (279, 4, img.size)]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", t, k, 1, v) for t, k, v in tags)
    return b"II*\0" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + img.tobytes()


def decode(data: bytes, fmt="RGB"):
    return run("image_decoder", [np.frombuffer(data, np.uint8)], {"pixel_format": fmt})


@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [4, 3, 2, 1, 0]])
def test_image_decoder_png_filters(filters):
    np.testing.assert_array_equal(decode(_png(IMG, filters)), IMG)
    rgba = np.concatenate([IMG, np.full(IMG.shape[:2] + (1,), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(decode(_png(rgba, filters)), IMG)  # alpha is dropped


def test_image_decoder_formats_and_pixel_formats():
    ppm = b"P6\n# a comment\n7 5\n255\n" + IMG.tobytes()
    for data in (_bmp(IMG), ppm, _tiff(IMG)):
        np.testing.assert_array_equal(decode(data), IMG)
    np.testing.assert_array_equal(decode(ppm, "BGR"), IMG[..., ::-1])
    gray = decode(ppm, "Grayscale")
    want = np.round(IMG @ np.array([0.299, 0.587, 0.114]))
    assert gray.shape == (5, 7, 1) and np.abs(gray[..., 0] - want).max() <= 1
    # a gray image asked for as RGB repeats its one channel
    g = IMG[..., :1]
    np.testing.assert_array_equal(decode(b"P5 7 5 255\n" + g.tobytes()), np.repeat(g, 3, axis=2))


def test_image_decoder_unsupported_and_corrupt():
    from irgraph.errors import ExecutionError
    with pytest.raises(ExecutionError, match="JPEG"):
        decode(b"\xff\xd8\xff\xe0" + bytes(20))
    assert decode(b"\x89PNG\r\n\x1a\n" + bytes(10)).shape == (0, 0, 3)  # corrupt: an empty image
    t = infer("image_decoder", [TensorType((100,), dt.uint8)], {"pixel_format": "Grayscale"})
    assert t.shape[2] == 1 and t.dtype is dt.uint8
    with pytest.raises(ShapeError, match="image_decoder"):
        infer("image_decoder", [TensorType((100,), dt.uint8)], {"pixel_format": "CMYK"})
