"""CPU decode: exact size, any mode to RGB, EXIF, reduced JPEG decode, bad rows dropped."""
import io

import numpy as np
import pytest
from PIL import Image

from vlv_ray.data.decode import BadImage, decode_batch, decode_image


def encode(im: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "LA"])
def test_any_mode_to_rgb(mode):
    im = Image.new("RGB", (40, 30), (200, 30, 30)).convert(mode) if mode != "I;16" else Image.new("I;16", (40, 30), 40000)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = decode_image(encode(im, fmt), 24)
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8
    if mode == "I;16":
        assert out.min() == 255  # a flat 16-bit image scales to full white, not to 0 or 156


def test_transparent_pixels_composite_on_white():
    im = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    assert decode_image(encode(im), 16).min() == 255


def test_exif_orientation_is_honoured():
    im = Image.new("RGB", (60, 30), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 30, 30))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out = decode_image(encode(im, "JPEG", exif=exif.tobytes(), quality=95), 30)
    # After rotation the image is 30 wide x 60 tall with white on top; centre crop = middle.
    rotated = decode_image(encode(im.rotate(-90, expand=True), "JPEG", quality=95), 30)
    assert np.abs(out.astype(int) - rotated.astype(int)).mean() < 3


def test_large_jpeg_reduced_decode_matches_full_decode(monkeypatch):
    from PIL import JpegImagePlugin

    drafts = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real_draft(self, mode, size)
        drafts.append(self.size)  # the size libjpeg will actually decode at
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    big = Image.fromarray(base).resize((2048, 1536), Image.Resampling.BICUBIC)
    data = encode(big, "JPEG", quality=90)
    fast = decode_image(data, 64)
    # Reference: full-size decode, then the exact centre square resized to 64.
    full = Image.open(io.BytesIO(data)).convert("RGB")
    ref = np.asarray(full.resize((64, 64), Image.Resampling.BILINEAR, box=(256, 0, 1792, 1536)))
    assert fast.shape == (64, 64, 3)
    assert np.abs(fast.astype(int) - ref.astype(int)).mean() < 2  # measured 0.65 / 255
    assert drafts[0] == (256, 192)  # 1/8-scale DCT decode: 192 px, still above the 64 px target
    drafts.clear()
    decode_image(encode(Image.new("RGB", (100, 80)), "JPEG"), 64)
    assert drafts == []  # under 2x the target: a full decode, no draft


def test_garbage_and_bombs_raise_bad_image():
    with pytest.raises(BadImage) as e:
        decode_image(b"not an image", 16)
    assert e.value.reason == "corrupt"
    with pytest.raises(BadImage) as e:
        decode_image(encode(Image.new("L", (100, 100))), 16, max_pixels=50 * 50)
    assert e.value.reason == "bomb"
    truncated = encode(Image.new("RGB", (64, 64), (9, 9, 9)), "JPEG")[:200]
    with pytest.raises(BadImage):
        decode_image(truncated, 16)


def test_decode_batch_drops_bad_rows_and_names_them():
    good = encode(Image.new("RGB", (20, 20), (10, 200, 10)))
    batch = {"key": np.array(["a", "b", "c"], dtype=object),
             "image": np.array([good, b"junk", good], dtype=object),
             "caption": np.array(["x", "y", "z"], dtype=object)}
    out, rejects = decode_batch(batch, 8)
    assert rejects == [("b", "corrupt")]
    assert list(out["key"]) == ["a", "c"] and list(out["caption"]) == ["x", "z"]
    assert out["image"].shape == (2, 8, 8, 3) and out["image"][:, :, :, 1].min() > 150  # never zeros


def test_pil_bomb_guard_is_reported_as_bomb(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses above 2x this at open
    with pytest.raises(BadImage) as e:
        decode_image(encode(Image.new("RGB", (100, 100))), 16)
    assert e.value.reason == "bomb"


def test_unusable_exif_keeps_the_image(monkeypatch):
    from PIL import ImageOps

    def broken(im):
        raise SyntaxError("bad EXIF IFD")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken)
    out = decode_image(encode(Image.new("RGB", (30, 20), (0, 0, 250)), "JPEG"), 10)
    assert out.shape == (10, 10, 3) and out[..., 2].min() > 200


def test_decode_batch_keeps_column_dtypes_and_handles_all_bad():
    good = encode(Image.new("RGB", (20, 20)))
    batch = {"key": np.array(["a", "b"], dtype=object), "image": np.array([b"x", good], dtype=object),
             "width": np.array([20, 20], dtype=np.int32)}
    out, rejects = decode_batch(batch, 8)
    assert out["width"].dtype == np.int32 and out["width"].tolist() == [20]
    out, rejects = decode_batch({"key": batch["key"], "image": np.array([b"x", b"y"], dtype=object)}, 8)
    assert out["image"].shape == (0, 8, 8, 3) and out["key"].shape == (0,)
    assert rejects == [("a", "corrupt"), ("b", "corrupt")]
