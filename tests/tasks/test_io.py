"""tasks.io: grayscale and 16-bit images survive a round trip; writes are atomic; what would be read wrongly is
refused by name (frames, pixel budget, float ranges), EXIF orientation is applied and CMYK goes through its ICC
profile."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from tasks.errors import InputError
from tasks.io import list_images, load_image, read_image, read_image_raw, save_image, write_image
from tests.icc import cmyk_profile, encoded_lab, lab_to_srgb


def test_rgb_and_gray_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    for c in (1, 3):
        x = torch.randint(0, 256, (c, 9, 7), generator=g, dtype=torch.uint8)
        path = save_image(x.float() / 255, tmp_path / f"img{c}.png")
        assert torch.equal(read_image(path, torch.uint8), x)
        assert read_image(path).shape == (c, 9, 7)
    assert [p.name for p in list_images(tmp_path)] == ["img1.png", "img3.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_sixteen_bit_gray_keeps_its_precision(tmp_path):
    arr = np.array([[0, 1, 65535], [300, 40000, 2]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    x = read_image(tmp_path / "deep.png", torch.float64)
    np.testing.assert_allclose(x[0].numpy(), arr / 65535)
    with pytest.raises(ValueError, match="16-bit"):
        read_image(tmp_path / "deep.png", torch.uint8)
    save_image(x, tmp_path / "again.png", bits=16)
    assert np.array_equal(np.array(Image.open(tmp_path / "again.png")), arr)


def test_alpha_is_dropped(tmp_path):
    Image.new("RGBA", (4, 3), (10, 20, 30, 40)).save(tmp_path / "a.png")
    x = read_image(tmp_path / "a.png", torch.uint8)
    assert x.shape == (3, 3, 4) and x[:, 0, 0].tolist() == [10, 20, 30]


def test_bad_inputs_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="C = 1 or 3"):
        save_image(torch.zeros(2, 4, 4), tmp_path / "x.png")
    with pytest.raises(ValueError, match="one by one"):
        save_image(torch.zeros(2, 3, 4, 4), tmp_path / "x.png")


def test_sixteen_bit_colour_round_trip(tmp_path):
    x = torch.randint(0, 65536, (3, 5, 7), generator=torch.Generator().manual_seed(0)).double() / 65535
    for name in ("deep.png", "deep.tif"):
        save_image(x, tmp_path / name, bits=16)
        raw, peak = read_image_raw(tmp_path / name)
        assert peak == 65535 and torch.equal(raw.double() / 65535, x)  # exact: not truncated to 8 bits


def test_sixteen_bit_colour_tiff_keeps_profile_and_declares_alpha(tmp_path):
    import cv2
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rng = np.random.default_rng(0)
    for channels in (3, 4):
        arr = rng.integers(0, 65536, (7, 9, channels), dtype=np.uint16)
        path = write_image(arr, tmp_path / f"c{channels}.tif", icc_profile=icc)
        back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # libtiff: the pixels untouched by the added tags
        assert np.array_equal(back[..., [2, 1, 0, 3][:channels]], arr)
        with Image.open(path) as im:  # Pillow's own TIFF tag reader
            assert im.info.get("icc_profile") == icc
            assert im.tag_v2.get(338) == ((2,) if channels == 4 else None)  # ExtraSamples: unassociated alpha
        loaded = load_image(path)
        assert loaded.icc_profile == icc and np.array_equal(loaded.image, arr)


def test_exif_orientation_is_applied(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)  # stored 6 wide, 4 high
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(arr).save(tmp_path / "o.png", exif=exif.tobytes())
        with Image.open(tmp_path / "o.png") as im:
            expected = np.asarray(ImageOps.exif_transpose(im)).transpose(2, 0, 1)
        assert np.array_equal(read_image(tmp_path / "o.png", torch.uint8).numpy(), expected), orientation


# EXIF 2.3 (JEITA CP-3451C), tag 0x0112: stored (H, W, ...) pixels -> display, transcribed from the definitions of
# where the 0th row and column go (5: transpose, 6: a quarter turn clockwise, 7: transverse, 8: anticlockwise)
_EXIF_DISPLAY = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
                 5: lambda a: a.swapaxes(0, 1), 6: lambda a: a[::-1].swapaxes(0, 1),
                 7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: a[:, ::-1].swapaxes(0, 1)}


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16", "F"])
@pytest.mark.parametrize("compression", [None, "tiff_deflate"])
def test_tiff_orientation_is_applied_once_and_right(tmp_path, mode, compression):
    """Pillow 13 applies a TIFF's orientation on load, and its raw decoder scrambles the quarter turns of 1- and
    2-byte samples (L, RGBA, 16-bit gray): every orientation, compressed or not, must come out as EXIF defines it."""
    channels = {"L": (), "RGB": (3,), "RGBA": (4,), "I;16": (), "F": ()}[mode]
    dtype = {"I;16": np.uint16, "F": np.float32}.get(mode, np.uint8)
    rng = np.random.default_rng(0)
    stored = rng.random((4, 6)).astype(dtype) if mode == "F" else rng.integers(0, 250, (4, 6, *channels)).astype(dtype)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.tif"
        image = Image.fromarray(stored) if mode in ("I;16", "F") else Image.fromarray(stored, mode=mode)
        image.save(path, exif=exif.tobytes(), **({"compression": compression} if compression else {}))
        got = np.asarray(load_image(path).image)
        assert np.array_equal(got, _EXIF_DISPLAY[orientation](stored)), (mode, compression, orientation)


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_sixteen_bit_colour_orientation_is_applied_once(tmp_path, suffix):
    """16-bit colour is decoded by OpenCV, which turns a TIFF by its tag itself (5.1, even with IMREAD_UNCHANGED)
    and a PNG not: both must come out turned once, as EXIF defines it."""
    import struct

    from tasks.io import _png_chunk, _tiff_with_tags

    stored = np.random.default_rng(0).integers(0, 65536, (4, 6, 3)).astype(np.uint16)
    write_image(stored, tmp_path / f"plain{suffix}")
    data = (tmp_path / f"plain{suffix}").read_bytes()
    for orientation in range(1, 9):
        if suffix == ".tif":
            tagged = _tiff_with_tags(data, {0x0112: (3, 1, struct.pack("<H" if data[:2] == b"II" else ">H",
                                                                        orientation))})
        else:  # an eXIf chunk (PNG 1.5) after IHDR: the EXIF TIFF structure without its "Exif\0\0" prefix
            exif = Image.Exif()
            exif[0x0112] = orientation
            tagged = data[:33] + _png_chunk(b"eXIf", exif.tobytes().removeprefix(b"Exif\0\0")) + data[33:]
        (tmp_path / f"o{suffix}").write_bytes(tagged)
        got = load_image(tmp_path / f"o{suffix}").image
        assert np.array_equal(got, _EXIF_DISPLAY[orientation](stored)), (suffix, orientation)


def test_what_would_be_silently_wrong_is_refused(tmp_path):
    frames = [Image.new("RGB", (4, 4), (i, i, i)) for i in (0, 99)]
    frames[0].save(tmp_path / "two.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(InputError, match=r"two.gif: 2 frames"):
        load_image(tmp_path / "two.gif")
    Image.new("L", (20, 10)).save(tmp_path / "big.png")
    with pytest.raises(InputError, match=r"big.png: 20x10 = 200 pixels is over the budget of 199"):
        load_image(tmp_path / "big.png", max_pixels=199)
    Image.fromarray(np.full((2, 2), -1.0, np.float32)).save(tmp_path / "neg.tif")
    with pytest.raises(InputError, match="negative"):
        read_image(tmp_path / "neg.tif")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty.png: not a readable image"):
        read_image(tmp_path / "empty.png")


def test_float_tiff_in_255_is_scaled_with_a_note(tmp_path):
    Image.fromarray(np.array([[0.0, 127.5], [255.0, 51.0]], np.float32)).save(tmp_path / "f.tif")
    loaded = load_image(tmp_path / "f.tif")
    assert loaded.float_peak == 255 and "divided by 255" in loaded.note
    np.testing.assert_allclose(read_image(tmp_path / "f.tif")[0].numpy(), [[0, 0.5], [1, 0.2]], rtol=1e-6)
    write_image(loaded.image, tmp_path / "back.tif", float_peak=loaded.float_peak)
    np.testing.assert_allclose(np.asarray(Image.open(tmp_path / "back.tif")), [[0, 127.5], [255, 51]], rtol=1e-6)


def _press(c: int, m: int, y: int, k: int) -> tuple[float, float, float]:
    """The test profile's inks: cyan prints red (Pillow's formula makes it (0, 255, 255): only the profile makes it
    red), magenta and yellow grey, black black."""
    if k:
        return 0.0, 0.0, 0.0
    if c and not (m or y):
        return 50.0, 60.0, 40.0
    return 100.0 - 30.0 * (c + m + y), 0.0, 0.0


# stored 3 wide, 2 high: white, cyan, black / magenta, cyan + magenta, white
_INKS = [[(0, 0, 0, 0), (1, 0, 0, 0), (0, 0, 0, 1)], [(0, 1, 0, 0), (1, 1, 0, 0), (0, 0, 0, 0)]]


def _cmyk(path, icc=None, orientation=None, block=1):
    """The inks as a CMYK file, each ``block`` x ``block`` pixels (JPEG: its centre survives the compression)."""
    inks = np.kron(np.array(_INKS, np.uint8) * 255, np.ones((block, block, 1), np.uint8))
    im = Image.fromarray(inks, mode="CMYK")
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    im.save(path, icc_profile=icc, exif=exif.tobytes(), **({"quality": 100} if path.suffix == ".jpg" else {}))
    return im


def test_cmyk_goes_through_its_icc_profile_to_srgb(tmp_path):
    """A print file's colours are what its profile says its inks look like (checked against the CIE formulas, not
    littlecms), in display orientation, and the CMYK profile is not attached to the RGB output."""
    _cmyk(tmp_path / "c.jpg", cmyk_profile(_press), orientation=6, block=16)  # 6: turn 90 degrees clockwise
    loaded = load_image(tmp_path / "c.jpg")
    assert loaded.image.mode == "RGB" and loaded.icc_profile is None and loaded.note is None
    expected = np.array([[lab_to_srgb(encoded_lab(_press(*ink))) for ink in row] for row in _INKS])
    got = np.asarray(loaded.image).astype(float)
    assert got.shape == (48, 32, 3)
    np.testing.assert_allclose(got[8::16, 8::16], np.rot90(expected, k=-1), atol=4)  # red cyan: (214, 61, 56)
    assert got[24, 24, 0] > 200 and got[24, 24, 1] < 80  # stored at (row 0, column 1): cyan ink, shown red


def test_cmyk_without_a_usable_profile_uses_pillows_formula(tmp_path):
    from PIL import ImageCms

    from restore.image_kinds import to_input
    from restore.inference import FallbackWarning

    stored = _cmyk(tmp_path / "plain.tif")
    loaded = load_image(tmp_path / "plain.tif")
    assert loaded.note is None and np.array_equal(np.asarray(loaded.image), np.asarray(stored.convert("RGB")))
    rgb_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    _cmyk(tmp_path / "wrong.tif", rgb_profile)  # an RGB profile on CMYK pixels: littlecms refuses the pair
    loaded = load_image(tmp_path / "wrong.tif")
    assert np.array_equal(np.asarray(loaded.image), np.asarray(stored.convert("RGB"))) and loaded.icc_profile is None
    assert loaded.note.startswith(f"{tmp_path / 'wrong.tif'}: its ICC profile cannot convert CMYK (")
    assert loaded.note.endswith("converted to RGB without colour management")
    with pytest.warns(FallbackWarning, match="a CMYK image: its ICC profile cannot convert CMYK"):
        to_input(Image.open(tmp_path / "wrong.tif"))  # restore_image given the PIL image itself: the same
    _cmyk(tmp_path / "c.tif", cmyk_profile(_press))
    assert torch.equal(to_input(Image.open(tmp_path / "c.tif"))[0], to_input(tmp_path / "c.tif")[0])
