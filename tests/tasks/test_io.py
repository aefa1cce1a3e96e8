"""tasks.io: grayscale and 16-bit images survive a round trip; writes are atomic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.io import list_images, read_image, save_image


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
