"""image_decoder: encoded image bytes to a uint8 (H, W, C) tensor.

Lossless formats only (PNG, BMP, PNM, uncompressed TIFF): they decode exactly with zlib and
numpy. JPEG, JPEG 2000 and WebP would need a codec library irgraph does not depend on.
"""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from ..errors import ExecutionError
from .image import check_choice
from .registry import Attr, OpDef, register
from .shapes import check_dtype, out


def _decoder_infer(ctx):
    t = check_dtype(ctx, 0, (dt.uint8,), "encoded_stream")
    if t.shape is not None and t.rank != 1:
        ctx.fail("the encoded image must be a 1-D uint8 tensor", input=0, actual=t)
    fmt = check_choice(ctx, "pixel_format", ("RGB", "BGR", "Grayscale"))
    return [out((ctx.fresh("height"), ctx.fresh("width"), 1 if fmt == "Grayscale" else 3), dt.uint8)]


def _png_unfilter(raw: np.ndarray, h: int, stride: int, bpp: int) -> np.ndarray:
    rows = raw.reshape(h, stride + 1)
    img = np.zeros((h, stride), np.int32)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if kind == 0:
            cur = line
        elif kind == 1:  # Sub: a running sum per byte position within a pixel
            cur = np.cumsum(np.pad(line, (0, -stride % bpp)).reshape(-1, bpp), axis=0).reshape(-1)[:stride] & 255
        elif kind == 2:
            cur = (line + prev) & 255
        elif kind in (3, 4):  # Average and Paeth depend on the reconstructed left neighbour
            cur = np.zeros(stride, np.int32)
            for i in range(stride):
                left = cur[i - bpp] if i >= bpp else 0
                up, corner = prev[i], (prev[i - bpp] if i >= bpp else 0)
                if kind == 3:
                    pred = (left + up) >> 1
                else:
                    p = left + up - corner
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                    pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                cur[i] = (line[i] + pred) & 255
        else:
            raise ValueError(f"bad PNG filter type {kind}")
        img[y] = prev = cur
    return img.astype(np.uint8)


def _decode_png(data: bytes) -> np.ndarray:
    import zlib
    pos, idat, palette, head = 8, [], None, None
    while pos + 8 <= len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            head = body
        elif kind == b"PLTE":
            palette = np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + n
    w, h = int.from_bytes(head[0:4], "big"), int.from_bytes(head[4:8], "big")
    depth, color, interlace = head[8], head[9], head[12]
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    if depth not in (8, 16) or interlace:
        raise NotImplementedError(f"PNG with bit depth {depth}{' and interlacing' if interlace else ''}")
    bpp = channels * depth // 8
    img = _png_unfilter(np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8), h, w * bpp, bpp)
    img = img.reshape(h, w, channels * depth // 8)
    if depth == 16:
        img = img[..., 0::2]  # keep the high byte, as 8-bit viewers do
    if color == 3:
        return palette[img[..., 0]]
    return img[..., :3] if channels >= 3 else img[..., :1]  # alpha is dropped


def _decode_bmp(data: bytes) -> np.ndarray:
    off = int.from_bytes(data[10:14], "little")
    w = int.from_bytes(data[18:22], "little", signed=True)
    h = int.from_bytes(data[22:26], "little", signed=True)
    bits, comp = int.from_bytes(data[28:30], "little"), int.from_bytes(data[30:34], "little")
    if bits not in (24, 32) or comp not in (0, 3):
        raise NotImplementedError(f"BMP with {bits} bits per pixel, compression {comp}")
    stride = (w * bits // 8 + 3) // 4 * 4
    rows = np.frombuffer(data, np.uint8, stride * abs(h), off).reshape(abs(h), stride)
    img = rows[:, :w * bits // 8].reshape(abs(h), w, bits // 8)[..., 2::-1]  # BGR(A) -> RGB
    return img[::-1] if h > 0 else img  # positive heights are stored bottom-up


def _decode_pnm(data: bytes) -> np.ndarray:
    fields, pos = [], 2
    while len(fields) < 3:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos)
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(int(data[pos:end]))
        pos = end
    w, h, maxval = fields
    if maxval > 255:
        raise NotImplementedError("PNM with 16-bit samples")
    c = 3 if data[:2] == b"P6" else 1
    return np.frombuffer(data, np.uint8, w * h * c, pos + 1).reshape(h, w, c)


def _decode_tiff(data: bytes) -> np.ndarray:
    order = "little" if data[:2] == b"II" else "big"

    def num(p, size):
        return int.from_bytes(data[p:p + size], order)

    ifd, tags = num(4, 4), {}
    for i in range(num(ifd, 2)):
        e = ifd + 2 + 12 * i
        tag, kind, count = num(e, 2), num(e + 2, 2), num(e + 4, 4)
        size = {3: 2, 4: 4}.get(kind, 1)
        p = e + 8 if size * count <= 4 else num(e + 8, 4)
        tags[tag] = [num(p + size * k, size) for k in range(count)]
    w, h = tags[256][0], tags[257][0]
    c = tags.get(277, [1])[0]
    if tags.get(259, [1])[0] != 1 or set(tags.get(258, [8])) != {8} or tags.get(284, [1])[0] != 1:
        raise NotImplementedError("compressed, planar or non-8-bit TIFF")
    raw = b"".join(data[o:o + n] for o, n in zip(tags[273], tags[279]))
    img = np.frombuffer(raw, np.uint8, w * h * c).reshape(h, w, c)
    return img[..., :3] if c >= 3 else img[..., :1]


_DECODERS = ((b"\x89PNG\r\n\x1a\n", _decode_png), (b"BM", _decode_bmp), (b"P5", _decode_pnm),
             (b"P6", _decode_pnm), (b"II*\x00", _decode_tiff), (b"MM\x00*", _decode_tiff))


def _decoder_ref(ins, a):
    data = np.asarray(ins[0], np.uint8).tobytes()
    fmt = a["pixel_format"]
    for magic, decode in _DECODERS:
        if data.startswith(magic):
            break
    else:
        kind = "JPEG" if data[:2] == b"\xff\xd8" else "WebP" if data[8:12] == b"WEBP" else \
            "JPEG 2000" if b"jP" in data[:12] else "this"
        raise ExecutionError(f"cannot decode {kind} images: irgraph decodes PNG, BMP, PNM and "
                         "uncompressed TIFF only", hint="decode the image before calling the model")
    try:
        img = decode(data)
    except NotImplementedError as e:
        raise ExecutionError(f"unsupported image variant: {e}") from None
    except Exception:
        # a corrupt stream decodes to an empty image, as ONNX specifies
        return np.zeros((0, 0, 1 if fmt == "Grayscale" else 3), np.uint8)
    if img.shape[2] == 1 and fmt != "Grayscale":
        img = np.repeat(img, 3, axis=2)
    if fmt == "Grayscale" and img.shape[2] == 3:
        # ITU-R 601-2 luma in 16-bit fixed point, rounding as common image libraries do
        rgb = img.astype(np.uint32)
        img = ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16)[..., None]
    if fmt == "BGR":
        img = img[..., ::-1]
    return np.ascontiguousarray(img, dtype=np.uint8)


register(OpDef(
    "image_decoder", infer=_decoder_infer, reference=_decoder_ref, inputs=(1, 1), kind="other",
    differentiable=False,
    attrs={"pixel_format": Attr("str", "RGB", "RGB | BGR | Grayscale")},
    doc="image_decoder(bytes uint8[n]) -> uint8[H, W, C]; PNG, BMP, PNM and uncompressed TIFF",
))
