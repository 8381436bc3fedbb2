"""Init-image references: small PNG and JPEG files and the RGB pixels diffusers sees for them.

diffusers.utils.load_image opens an image with PIL, applies ImageOps.exif_transpose (none of these files has an
orientation tag) and converts it with .convert("RGB"). That RGB array is the reference the C decoders
(src/image/png.c sdxl_png_decode, src/image/jpeg.c sdxl_jpeg_decode) are compared with in tests/image/.

Writes to --out (default tests/data/images), each image with <name>.rgb = the H x W x 3 uint8 pixels, raw:
  rgb_444.jpg        24x16 RGB, quality 90, 4:4:4
  rgb_420.jpg        24x16 RGB, quality 75, 4:2:0 (the common camera / web JPEG)
  progressive.jpg    24x16 RGB, quality 85, progressive, 4:2:0
  gray.jpg           24x16 greyscale JPEG (one component)
  cmyk.jpg           24x16 CMYK JPEG (PIL writes the Adobe marker and inverted inks, as Photoshop does)
  palette_trns.png   24x16 8-bit palette with a tRNS chunk (transparency dropped by convert("RGB"))
  gray1.png          24x16 1-bit greyscale
  gray_alpha.png     24x16 greyscale + alpha
  rgba.png           24x16 RGBA (alpha dropped)
  orient_<o>.jpg     rgb_444.jpg's pixels with an EXIF Orientation tag o = 2..8 (big-endian TIFF, PIL's
                     default, but orient_6.jpg little-endian); the reference is ImageOps.exif_transpose(...).convert("RGB"),
                     so 16x24 for o = 5..8
Deterministic: numpy's default_rng(7); PIL's encoders are deterministic for a given Pillow/zlib/libjpeg.
Run: /work/venv-refs/bin/python tools/refs/make_image_refs.py
"""
import argparse
import io
import os

import numpy as np
from PIL import Image, ImageOps

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
W, H = 24, 16


def base_rgb(rng):
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([x * 255 // (W - 1), y * 255 // (H - 1), (x + y) * 255 // (W + H - 2)], axis=-1).astype(np.int32)
    img += rng.integers(-20, 21, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def save(out, name, im, **kw):
    buf = io.BytesIO()
    im.save(buf, format="JPEG" if name.endswith(".jpg") else "PNG", **kw)
    data = buf.getvalue()
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
    ref = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"), dtype=np.uint8)
    assert ref.shape in ((H, W, 3), (W, H, 3)), ref.shape
    with open(os.path.join(out, os.path.splitext(name)[0] + ".rgb"), "wb") as f:
        f.write(ref.tobytes())
    print(f"{name}: {len(data)} bytes, mode {Image.open(io.BytesIO(data)).mode}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "images"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(7)
    rgb = base_rgb(rng)
    im = Image.fromarray(rgb, "RGB")
    save(a.out, "rgb_444.jpg", im, quality=90, subsampling=0)
    save(a.out, "rgb_420.jpg", im, quality=75, subsampling=2)
    save(a.out, "progressive.jpg", im, quality=85, subsampling=2, progressive=True)
    save(a.out, "gray.jpg", im.convert("L"), quality=90)
    cmyk = np.concatenate([255 - rgb, rng.integers(0, 64, size=(H, W, 1), dtype=np.uint8)], axis=-1)
    save(a.out, "cmyk.jpg", Image.fromarray(cmyk, "CMYK"), quality=95)
    pal = im.quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    pal.info["transparency"] = 3
    save(a.out, "palette_trns.png", pal, transparency=3)
    save(a.out, "gray1.png", im.convert("L").point(lambda v: 255 if v > 110 else 0).convert("1"))
    la = Image.merge("LA", [im.convert("L"), Image.fromarray(rng.integers(0, 256, size=(H, W), dtype=np.uint8))])
    save(a.out, "gray_alpha.png", la)
    rgba = np.concatenate([rgb, rng.integers(0, 256, size=(H, W, 1), dtype=np.uint8)], axis=-1)
    save(a.out, "rgba.png", Image.fromarray(rgba, "RGBA"))
    for o in range(2, 9):
        exif = Image.Exif()
        if o == 6:
            exif.endian = "<"
        exif[0x0112] = o
        save(a.out, f"orient_{o}.jpg", im, quality=90, subsampling=0, exif=exif.tobytes())


if __name__ == "__main__":
    main()
