#!/usr/bin/python3
"""Writes the image-mode parity test data (tests/unit/test_data_pil_modes.cpp): one small image file per PIL mode
taxon decodes, and what Pillow makes of each in CLIP's preprocessing, to compare taxon against.

Run with Debian's interpreter and packages (apt install python3-pil python3-numpy; Pillow 9.4 on Debian 12) from
this folder:  /usr/bin/python3 make_goldens.py   Development only: the tests read the committed files.

PNGs are written by the small encoder below (so every colour type, bit depth and tRNS variant is exactly what the
name says), JPEGs by Pillow, except the YCCK one: libjpeg-turbo's TurboJPEG API (libturbojpeg0, through ctypes)
encodes CMYK input as YCCK, which Pillow cannot write.

expected.txt has one line per (file, step):  <file> <PIL mode> <step> <height> <width> <hex of uint8 HWC RGB>
  step "rgb":        Image.open(f).convert("RGB")
  step "clip<R>x<C>": torchvision Resize(R) (bicubic, shorter side) -> CenterCrop(C) -> convert("RGB") on the
                      opened image, as CLIP's _transform does (torchvision's PIL code paths, written out here)
"""
import ctypes
import ctypes.util
import io
import os
import struct
import zlib

import numpy as np
from PIL import Image

H, W = 23, 37  # small, not square, and every resize below is a real (antialiased) downscale
STEPS = [(10, 10), (14, 12)]


def png(path, pixels, color_type, depth, palette=None, trns=None):
    """A PNG of `pixels` ([H, W, C] integers in the file's sample range; palette indices for colour type 3)."""
    h, w = pixels.shape[:2]
    rows = []
    for y in range(h):
        row = pixels[y].reshape(-1)
        if depth == 16:
            data = row.astype(">u2").tobytes()
        elif depth == 8:
            data = row.astype(np.uint8).tobytes()
        else:  # pack samples MSB first
            per_byte = 8 // depth
            padded = np.zeros(((len(row) + per_byte - 1) // per_byte) * per_byte, dtype=np.int64)
            padded[: len(row)] = row
            packed = np.zeros(len(padded) // per_byte, dtype=np.int64)
            for k in range(per_byte):
                packed |= padded[k::per_byte] << (8 - depth * (k + 1))
            data = packed.astype(np.uint8).tobytes()
        rows.append(b"\x00" + data)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0))
    if palette is not None:
        out += chunk(b"PLTE", bytes(np.asarray(palette, dtype=np.uint8).reshape(-1)))
    if trns is not None:
        out += chunk(b"tRNS", trns)
    out += chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(out)


def ycck_jpeg(path, cmyk):
    """CMYK pixels encoded as a YCCK JPEG (Adobe transform 2) by TurboJPEG."""
    tj = ctypes.CDLL(ctypes.util.find_library("turbojpeg") or "libturbojpeg.so.0")
    tj.tjInitCompress.restype = ctypes.c_void_p
    tj.tjCompress2.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                               ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_ulong),
                               ctypes.c_int, ctypes.c_int, ctypes.c_int]
    tj.tjFree.argtypes = [ctypes.c_void_p]
    tj.tjDestroy.argtypes = [ctypes.c_void_p]
    handle = tj.tjInitCompress()
    buf, size = ctypes.c_void_p(), ctypes.c_ulong(0)
    h, w = cmyk.shape[:2]
    TJPF_CMYK, TJSAMP_420 = 11, 2
    rc = tj.tjCompress2(handle, cmyk.astype(np.uint8).tobytes(), w, 0, h, TJPF_CMYK, ctypes.byref(buf),
                        ctypes.byref(size), TJSAMP_420, 90, 0)
    assert rc == 0, "tjCompress2 failed"
    data = ctypes.string_at(buf, size.value)
    tj.tjFree(buf)
    tj.tjDestroy(handle)
    assert b"Adobe" in data
    with open(path, "wb") as f:
        f.write(data)


def pattern(seed, channels, hi=256):
    """Smooth gradients plus noise, so the resize has something to blend, in [0, hi)."""
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:H, 0:W]
    planes = []
    for c in range(channels):
        base = (x * (3 + 2 * c) + y * (5 - c)) / (W * 3 + H * 5) * hi
        planes.append(np.clip(base + rs.randint(-hi // 6, hi // 6 + 1, (H, W)), 0, hi - 1))
    return np.stack(planes, -1).astype(np.int64)


def alpha_plane(seed):
    """Alpha with fully transparent and fully opaque areas and everything between."""
    a = pattern(seed, 1)[..., 0]
    a[:, :6] = 0
    a[:, -6:] = 255
    a[:4, 10:20] = 1
    return a


def clip_preprocess(im, resize_to, crop):
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize_to, int(resize_to * long / short)
    size = (new_short, new_long) if w <= h else (new_long, new_short)  # PIL size is (width, height)
    im = im.resize(size, Image.BICUBIC)
    w, h = im.size
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    return im.crop((left, top, left + crop, top + crop)).convert("RGB")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    os.chdir(here)
    files = []

    def add(name):
        files.append(name)

    rgb = pattern(1, 3)
    png("rgb.png", rgb, 2, 8); add("rgb.png")
    png("rgb_trns.png", rgb, 2, 8, trns=struct.pack(">HHH", *rgb[0, 0])); add("rgb_trns.png")
    png("rgb16.png", pattern(2, 3, 65536), 2, 16); add("rgb16.png")
    grey = pattern(3, 1)
    png("l.png", grey, 0, 8); add("l.png")
    png("l_trns.png", grey, 0, 8, trns=struct.pack(">H", int(grey[0, 0, 0]))); add("l_trns.png")
    png("l2.png", pattern(4, 1, 4), 0, 2); add("l2.png")
    png("bilevel.png", pattern(5, 1, 2), 0, 1); add("bilevel.png")
    # 16-bit grey: mode I, clipped to 0..255 by convert("RGB"); a dark band keeps part of the output below 255.
    g16 = pattern(6, 1, 65536)
    g16[:, : W // 2] = pattern(7, 1, 400)[:, : W // 2]
    png("l16.png", g16, 0, 16); add("l16.png")
    la = np.concatenate([pattern(8, 1), alpha_plane(9)[..., None]], -1)
    png("la.png", la, 4, 8); add("la.png")
    la16 = np.concatenate([pattern(10, 1, 65536), alpha_plane(11)[..., None] * 257], -1)
    png("la16.png", la16, 4, 16); add("la16.png")
    rgba = np.concatenate([pattern(12, 3), alpha_plane(13)[..., None]], -1)
    png("rgba.png", rgba, 6, 8); add("rgba.png")
    rgba16 = np.concatenate([pattern(14, 3, 65536), alpha_plane(15)[..., None] * 257 + 128], -1)
    png("rgba16.png", rgba16, 6, 16); add("rgba16.png")
    rs = np.random.RandomState(16)
    palette = rs.randint(0, 256, (256, 3))
    index = (pattern(17, 1)[..., 0] + rs.randint(0, 3, (H, W))) % 256
    png("p.png", index[..., None], 3, 8, palette=palette); add("p.png")
    png("p_trns.png", index[..., None], 3, 8, palette=palette,
        trns=bytes(rs.randint(0, 256, 200).astype(np.uint8))); add("p_trns.png")
    png("p_trns_one.png", index[..., None], 3, 8, palette=palette, trns=b"\xff" * 7 + b"\x00"); add("p_trns_one.png")
    png("p4.png", (index % 16)[..., None], 3, 4, palette=palette[:16]); add("p4.png")

    Image.fromarray(pattern(18, 3).astype(np.uint8), "RGB").save("rgb.jpg", quality=90); add("rgb.jpg")
    Image.fromarray(pattern(19, 1)[..., 0].astype(np.uint8), "L").save("l.jpg", quality=90); add("l.jpg")
    cmyk = pattern(20, 4).astype(np.uint8)
    Image.fromarray(cmyk, "CMYK").save("cmyk.jpg", quality=90); add("cmyk.jpg")
    ycck_jpeg("ycck.jpg", pattern(21, 4)); add("ycck.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display; Image.open does not apply it
    Image.fromarray(pattern(22, 3).astype(np.uint8), "RGB").save("exif_rotated.jpg", quality=90, exif=exif)
    add("exif_rotated.jpg")

    lines = []
    for name in files:
        im = Image.open(name)
        im.load()
        if name == "exif_rotated.jpg":
            assert im.getexif().get(0x0112) == 6
        if name == "ycck.jpg":
            assert im.info.get("adobe_transform") == 2, im.info
        outputs = [("rgb", im.convert("RGB"))]
        outputs += [(f"clip{r}x{c}", clip_preprocess(im, r, c)) for r, c in STEPS]
        for step, out in outputs:
            a = np.asarray(out)
            lines.append(f"{name} {im.mode} {step} {a.shape[0]} {a.shape[1]} {a.tobytes().hex()}")
    with open("expected.txt", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
