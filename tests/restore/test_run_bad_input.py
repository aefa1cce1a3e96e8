"""`restore run` on bad input: nothing lost, nothing silently wrong.

Every test builds its bad input in tmp_path, runs `restore.cli.main`, and checks the exit code, that the message
names the file or option, that no input file changed (sha256 before and after), and that the output folder holds
only complete images (no temporary files).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import restore
from restore.cli import main
from tasks.io import read_image, read_image_raw

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("model")
    restore.create_model("edt_tiny", tasks=["sr_x2", "denoise_g25"]).eval().save_pretrained(d)
    return d


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny images: intra-op threads cost more than they give on a busy machine; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rgb(path: Path, size=(16, 16), seed: int = 0, **save) -> Path:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **save)
    return path


def _hashes(*roots: Path) -> dict[str, str]:
    """sha256 of every regular file under ``roots`` (links are not followed, so loops do not matter)."""
    out = {}
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for n in names:
                p = Path(dirpath) / n
                if p.is_file() and not p.is_symlink():
                    out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _outputs(out: Path) -> list[str]:
    """The files in ``out``; asserts there are no temporary files and that every image is complete."""
    if not out.exists():
        return []
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert not [p for p in files if p.name.startswith(".")], f"temporary files left: {files}"
    for p in files:
        with Image.open(p) as im:
            im.load()
    return [str(p.relative_to(out)) for p in files]


def _run(model_dir: Path, *args, task: str = "sr_x2") -> int:
    return main(["run", "--model", str(model_dir), "--task", task, "--no-progress", *map(str, args)])


# ------------------------------------------------------------------------------------------ inputs are never hit


def test_output_folder_equal_to_input_folder_is_refused(model_dir, tmp_path, capsys):
    src = tmp_path / "in"
    _rgb(src / "x.png"), _rgb(src / "y.jpg", seed=1), _rgb(src / "y.png", seed=2)
    before = _hashes(src)
    assert _run(model_dir, src, "-o", src) == 2
    err = capsys.readouterr().err
    assert "would overwrite" in err and "x.png" in err and "y.png" in err
    assert _hashes(src) == before and sorted(os.listdir(src)) == ["x.png", "y.jpg", "y.png"]


def test_output_into_input_folder_when_no_input_can_be_hit(model_dir, tmp_path, capsys):
    src = tmp_path / "in"
    _rgb(src / "a.jpg")
    before = _hashes(src)
    assert _run(model_dir, src, "-o", src) == 0  # a.jpg -> a.png: provably not an input
    assert _hashes(src).items() >= before.items() and sorted(os.listdir(src)) == ["a.jpg", "a.png"]


def test_output_folder_inside_input_folder_is_not_searched(model_dir, tmp_path, capsys):
    src = tmp_path / "photos"
    _rgb(src / "x.png")
    before = _hashes(src)
    assert _run(model_dir, src, "-o", src / "restored") == 0
    assert _outputs(src / "restored") == ["x.png"]
    # a second run must not take the first run's outputs as inputs, nor replace them silently
    capsys.readouterr()
    assert _run(model_dir, src, "-o", src / "restored") == 2
    assert "already exist" in capsys.readouterr().err
    assert _run(model_dir, src, "-o", src / "restored", "--overwrite") == 0
    assert "not searching the output folder" in capsys.readouterr().err
    assert _outputs(src / "restored") == ["x.png"]
    assert {k: v for k, v in _hashes(src).items() if "restored" not in k} == before


def test_input_inside_output_folder_and_links_to_inputs_are_refused(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    a = _rgb(out / "a.png")
    src = _rgb(tmp_path / "in" / "x.png", seed=1)
    (out / "x.png").symlink_to(src)  # the output name is a link to an input
    hard = tmp_path / "in2" / "a.png"
    hard.parent.mkdir()
    os.link(a, hard)  # an input hard-linked to an existing output
    before = _hashes(tmp_path)
    for args in ([a, "-o", out], [src, "-o", out, "--overwrite"], [hard, "-o", out, "--overwrite"]):
        capsys.readouterr()
        code = _run(model_dir, *args)
        err = capsys.readouterr().err
        assert code == 2 and "would overwrite" in err and "even with --overwrite" in err, err
    assert _run(model_dir, hard, "-o", tmp_path / "in2" / "sub") == 0
    assert _hashes(tmp_path).items() >= before.items()
    assert (out / "x.png").is_symlink()


# ------------------------------------------------------------------------------------------ collisions, existing


def test_output_name_collisions_are_refused_before_work(model_dir, tmp_path, capsys):
    _rgb(tmp_path / "a" / "x.png"), _rgb(tmp_path / "b" / "x.png", seed=1)
    _rgb(tmp_path / "c" / "x.jpg"), _rgb(tmp_path / "c" / "x.png", seed=2), _rgb(tmp_path / "c" / "y.webp")
    before = _hashes(tmp_path)
    out = tmp_path / "out"
    assert _run(model_dir, tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", "-o", out) == 2
    err = capsys.readouterr().err
    assert "collision" in err and "a/x.png" in err and "b/x.png" in err
    assert _run(model_dir, tmp_path / "c", "-o", out) == 2
    err = capsys.readouterr().err
    assert "c/x.jpg and" in err and "c/x.png ->" in err and "y.webp" not in err
    assert not out.exists() and _hashes(tmp_path) == before
    # the same file named twice is one input, not a collision
    assert _run(model_dir, tmp_path / "a" / "x.png", tmp_path / "a" / "x.png", "-o", out) == 0
    assert "restored 1 of 1" in capsys.readouterr().err and _outputs(out) == ["x.png"]


def test_existing_outputs_need_overwrite(model_dir, tmp_path, capsys):
    src = _rgb(tmp_path / "in" / "x.png")
    out = tmp_path / "out"
    old = _rgb(out / "x.png", size=(3, 3))
    before = _hashes(tmp_path)
    assert _run(model_dir, src, "-o", out) == 2
    err = capsys.readouterr().err
    assert "already exist" in err and "x.png" in err and "--overwrite" in err
    assert _hashes(tmp_path) == before
    assert _run(model_dir, src, "-o", out, "--overwrite") == 0
    assert Image.open(old).size == (32, 32)
    assert _hashes(src.parent) == {k: v for k, v in before.items() if k.startswith(str(src.parent))}


# ------------------------------------------------------------------------------------------ what a file holds


def test_exif_orientation_is_applied_and_not_left_in_the_output(model_dir, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display is rotated 90 degrees clockwise
    src = _rgb(tmp_path / "phone.jpg", size=(16, 8), exif=exif.tobytes())
    assert read_image(src).shape == (3, 16, 8)  # evaluation and training see the display orientation too
    out = tmp_path / "out"
    assert _run(model_dir, src, "-o", out) == 0
    with Image.open(out / "phone.png") as im:
        assert im.size == (16, 32)
        assert im.getexif().get(0x0112) in (None, 1)


def test_sixteen_bit_colour_stays_sixteen_bit(model_dir, tmp_path):
    arr = np.random.default_rng(0).integers(0, 65536, (16, 16, 3), dtype=np.uint16)
    tifffile = pytest.importorskip("tifffile")  # installed with scikit-image
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "deep.tif", arr)  # written by other libraries than the one under test
    ok, buf = cv2.imencode(".png", arr[..., ::-1].copy())
    (tmp_path / "in" / "deep.png").write_bytes(buf.tobytes())
    raw, peak = read_image_raw(tmp_path / "in" / "deep.png")
    assert peak == 65535 and np.array_equal(raw.numpy().transpose(1, 2, 0), arr)
    out = tmp_path / "out"
    assert _run(model_dir, tmp_path / "in", "-o", out) == 0
    for name in ("deep.png", "deep.tif"):
        res = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert res.dtype == np.uint16 and res.shape == (32, 32, 3)
        assert len(np.unique(res)) > 256  # real 16-bit values, not 8-bit ones scaled up


def _png_chunks(path: Path) -> list[bytes]:
    data, i, names = path.read_bytes(), 8, []
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        names.append(data[i + 4:i + 8])
        assert zlib.crc32(data[i + 4:i + 8 + n]) == int.from_bytes(data[i + 8 + n:i + 12 + n], "big")
        i += 12 + n
    return names


def _png16(path: Path, arr: np.ndarray, colour_type: int, icc: bytes | None = None, key: int | None = None) -> None:
    """A 16-bit PNG written from the spec (not by the encoders under test): colour type 0 gray (``key``: a tRNS
    colour key), 2 RGB, 4 gray+alpha."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    h, w = arr.shape[:2]
    rows = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))
    extra = chunk(b"iCCP", b"icc\0\0" + zlib.compress(icc)) if icc else b""
    extra += chunk(b"tRNS", key.to_bytes(2, "big")) if key is not None else b""
    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([16, colour_type, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def test_truncated_sixteen_bit_colour_is_named_as_truncated(tmp_path):
    from tasks.errors import InputError
    from tasks.io import load_image

    _png16(tmp_path / "whole.png", np.random.default_rng(0).integers(0, 65536, (32, 32, 3), dtype=np.uint16), 2)
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.png: a 16-bit colour image .*truncated or corrupt"):
        load_image(tmp_path / "cut.png")


def test_sixteen_bit_gray_alpha_and_icc_profile_are_kept(model_dir, tmp_path, capsys):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    _png16(src / "rgb16.png", rng.integers(0, 65536, (16, 16, 3), dtype=np.uint16), 2, icc)
    la = rng.integers(0, 65536, (16, 16, 2), dtype=np.uint16)
    _png16(src / "la16.png", la, 4, icc)
    gray = rng.integers(0, 65536, (16, 16), dtype=np.uint16)
    gray[2:6, 3:9] = 1234
    _png16(src / "key16.png", gray, 0, key=1234)  # those pixels transparent (PNG spec 11.3.2.1)
    out = tmp_path / "out"
    assert _run(model_dir, src, "-o", out) == 0
    assert "gray+alpha" not in capsys.readouterr().err  # nothing lost in PNG: no note
    assert Image.open(out / "rgb16.png").info.get("icc_profile") == icc  # the colours keep their meaning
    assert _png_chunks(out / "rgb16.png")[:2] == [b"IHDR", b"iCCP"] and b"sRGB" not in _png_chunks(out / "rgb16.png")
    for name, alpha in (("la16.png", la[..., 1]), ("key16.png", np.where(gray == 1234, 0, 65535))):
        data = (out / name).read_bytes()
        assert data[24:26] == bytes([16, 4]), name  # IHDR bit depth 16, colour type 4: 16-bit gray+alpha
        res = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)  # libpng, which expands gray+alpha to BGRA
        assert res.dtype == np.uint16 and res.shape == (32, 32, 4) and len(np.unique(res[..., 0])) > 256
        alpha = torch.from_numpy(alpha.astype(np.float32) / 65535)[None, None]
        expect = F.interpolate(alpha, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)[0, 0]
        assert np.abs(res[..., 3].astype(np.float64) - expect.numpy() * 65535).max() <= 1, name  # alpha resized
    assert _png_chunks(out / "la16.png")[:2] == [b"IHDR", b"iCCP"]
    assert Image.open(out / "la16.png").info.get("icc_profile") == icc


def test_sixteen_bit_gray_alpha_png_is_written_bit_exact(tmp_path):
    from tasks.io import write_image

    rng = np.random.default_rng(1)
    arr = rng.integers(0, 65536, (7, 9, 2), dtype=np.uint16)
    arr[3] = np.arange(9 * 2, dtype=np.uint16).reshape(9, 2) * 3000  # wraps of the Sub filter's bytes
    write_image(arr, tmp_path / "la.png")
    back = cv2.imread(str(tmp_path / "la.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(back[..., 0], arr[..., 0]) and np.array_equal(back[..., 3], arr[..., 1])
    assert np.array_equal(back[..., 0], back[..., 2])
    with Image.open(tmp_path / "la.png") as im:  # Pillow reads the same file as 16-bit gray+alpha (in 8 bits)
        assert im.tile[0].args in ("LA;16B", ("LA;16B",))
        assert np.array_equal(np.asarray(im)[..., 0], (arr[..., 0] >> 8).astype(np.uint8))


def test_float_tiffs_are_range_checked(model_dir, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    base = rng.random((16, 16), dtype=np.float32)
    bad = base.copy()
    bad[3, 4] = np.nan
    for name, arr in {"unit.tif": base, "eight.tif": base * 255, "sixteen.tif": base * 65535,
                      "negative.tif": base - 0.5, "nan.tif": bad, "huge.tif": base * 1e6}.items():
        Image.fromarray(arr).save(src / name)
    before = _hashes(src)
    out = tmp_path / "out"
    assert _run(model_dir, src, "-o", out) == 1
    err = capsys.readouterr().err
    assert "restored 3 of 6" in err
    assert "negative.tif: a float image with negative values" in err
    assert "nan.tif: a float image holding NaN" in err and "huge.tif: a float image with values up to" in err
    assert "eight.tif: float values in [0, 255]" in err
    assert _outputs(out) == ["eight.tif", "sixteen.tif", "unit.tif"] and _hashes(src) == before
    peaks = {n: np.asarray(Image.open(out / n)).max() for n in ("unit.tif", "eight.tif", "sixteen.tif")}
    assert peaks["unit.tif"] <= 1 < peaks["eight.tif"] <= 255 < peaks["sixteen.tif"] <= 65535  # own range kept


def test_multi_frame_files_are_refused_by_name(model_dir, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    frames = [Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)) for i in range(3)]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(src / "apng.png", save_all=True, append_images=frames[1:2])  # APNG
    frames[0].save(src / "pages.tif", save_all=True, append_images=frames[1:])
    _rgb(src / "still.gif")
    before = _hashes(src)
    out = tmp_path / "out"
    assert _run(model_dir, src, "-o", out) == 1
    err = capsys.readouterr().err
    assert "anim.gif: 3 frames" in err and "apng.png: 2 frames" in err and "pages.tif: 3 frames" in err
    assert "split it first" in err and "restored 1 of 4" in err
    assert _outputs(out) == ["still.png"] and _hashes(src) == before


def _bomb_png(path: Path, side: int = 30000) -> None:
    """A valid 1-bit PNG of side x side pixels (900 M) that is about 100 KB on disk.

    The zlib stream is one compressed chunk of rows repeated: after a full flush the compressor forgets its
    history, so the chunk's bytes can be repeated as they are; the stream ends with an empty final block and the
    Adler-32 of all the rows (compressing 112 MB of zeros for real would take seconds).
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    rows = (b"\0" * (1 + side // 8)) * 1000  # 1000 rows, each a filter byte and side / 8 bytes of pixels
    comp = zlib.compressobj(9)
    first = comp.compress(rows) + comp.flush(zlib.Z_FULL_FLUSH)
    again = comp.compress(rows) + comp.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(side // 1000):
        adler = zlib.adler32(rows, adler)
    body = first + again * (side // 1000 - 1) + b"\x03\x00" + adler.to_bytes(4, "big")
    ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_pixel_budget_skips_decompression_bombs(model_dir, tmp_path, capsys, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    _bomb_png(src / "bomb.png")
    assert (src / "bomb.png").stat().st_size < 200_000
    _rgb(src / "good.png")
    before = _hashes(src)
    out = tmp_path / "out"
    assert _run(model_dir, src, "-o", out) == 1
    err = capsys.readouterr().err
    assert "bomb.png: 30000x30000" in err and "--max-pixels" in err and "restored 1 of 2" in err
    assert _outputs(out) == ["good.png"]
    assert _run(model_dir, src / "good.png", "-o", tmp_path / "o2", "--max-pixels", "100") == 1
    assert "good.png: 16x16 = 256 pixels is over the budget of 100" in capsys.readouterr().err
    monkeypatch.setenv("RESTORE_MAX_PIXELS", "100")
    assert _run(model_dir, src / "good.png", "-o", tmp_path / "o3") == 1
    monkeypatch.setenv("RESTORE_MAX_PIXELS", "lots")
    assert _run(model_dir, src / "good.png", "-o", tmp_path / "o4") == 2
    assert "RESTORE_MAX_PIXELS='lots'" in capsys.readouterr().err
    assert _hashes(src) == before and not (tmp_path / "o4").exists()


def test_non_finite_model_output_is_an_error_not_a_black_image(tmp_path, capsys):
    torch.manual_seed(0)
    model = restore.create_model("edt_tiny", tasks=["sr_x2"]).eval()
    with torch.no_grad():  # finite weights (so the model loads) whose outputs overflow to inf and NaN
        for name, p in model.named_parameters():
            if name.startswith("tails."):
                p.mul_(1e30)
    model.save_pretrained(tmp_path / "model")
    src = _rgb(tmp_path / "in" / "x.png")
    out = tmp_path / "out"
    assert _run(tmp_path / "model", src, "-o", out) == 1
    err = capsys.readouterr().err
    assert "x.png: the model's output for this image holds NaN or infinite values" in err
    assert "restored 0 of 1" in err and _outputs(out) == []


# ------------------------------------------------------------------------------------------ options


@pytest.mark.parametrize("args, named", [
    (["--tile", "0"], "--tile"), (["--tile", "-5"], "--tile"), (["--tile", "big"], "--tile"),
    (["--overlap", "-4"], "--overlap"), (["--device", "tpu9"], "tpu9"), (["--device", "meta"], "meta"),
    (["--dtype", "fp8"], "--dtype"), (["--max-pixels", "0"], "--max-pixels"),
])
def test_bad_options_are_refused_before_the_model_loads(tmp_path, capsys, args, named):
    src = _rgb(tmp_path / "x.png")
    # a model that does not exist: a check made after loading would report the model instead of the option
    code = main(["run", "--model", str(tmp_path / "no-model"), "--task", "sr_x2", str(src), "-o",
                 str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert code == 2 and named in err and "cannot load model" not in err, err
    assert not (tmp_path / "out").exists()


def test_unusable_device_output_and_inputs_are_refused_before_the_model_loads(tmp_path, capsys):
    src = _rgb(tmp_path / "x.png")
    base = ["run", "--model", str(tmp_path / "no-model"), "--task", "sr_x2"]
    cases = [([str(src), "-o", str(src)], "is an existing file"),
             ([str(src), str(tmp_path / "missing.png"), "-o", str(tmp_path / "o")], "missing.png"),
             ([str(tmp_path / "empty"), "-o", str(tmp_path / "o")], "empty")]
    (tmp_path / "empty").mkdir()
    if not torch.cuda.is_available():
        cases.append(([str(src), "-o", str(tmp_path / "o"), "--device", "cuda"], "--device cuda"))
    for args, named in cases:
        assert main(base + args) == 2
        err = capsys.readouterr().err
        assert named in err and "cannot load model" not in err, err
    assert not (tmp_path / "o").exists()
    # the model itself failing to load: the -o folder the run created (empty) is not left behind
    assert main(base + [str(src), "-o", str(tmp_path / "o")]) == 2
    assert "cannot load model" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.fixture
def tmpfs(tmp_path):
    """A 64 KiB tmpfs at tmp_path/mnt (root only), unmounted afterwards."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); disk-full and read-only cases are not checked")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_read_only_output_folder_is_refused_with_the_fix(model_dir, tmp_path, tmpfs, capsys):
    src = _rgb(tmp_path / "x.png")
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    assert _run(model_dir, src, "-o", tmpfs / "out") == 2
    err = capsys.readouterr().err
    assert "cannot write there" in err and "Read-only" in err and "choose" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to any folder and read any file")
def test_unwritable_folder_and_unreadable_file_when_not_root(model_dir, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    src = _rgb(tmp_path / "in" / "x.png")
    secret = _rgb(tmp_path / "in" / "secret.png")
    secret.chmod(0)
    assert _run(model_dir, src, "-o", locked / "out") == 2
    assert "cannot write there" in capsys.readouterr().err
    assert _run(model_dir, tmp_path / "in", "-o", tmp_path / "out") == 1
    assert "secret.png" in capsys.readouterr().err


def test_disk_full_stops_the_run_with_only_complete_outputs(model_dir, tmp_path, tmpfs, capsys):
    src = tmp_path / "in"
    for i in range(4):
        _rgb(src / f"{i}.png", size=(32, 32), seed=i)
    before = _hashes(src)
    filler = tmpfs / "filler"
    with open(filler, "wb") as f:  # leave about 8 KB: the first 64x64 output may fit, the others cannot
        f.write(b"\0" * (56 * 1024))
    out = tmpfs / "out"
    assert _run(model_dir, src, "-o", out) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "stopped at" in err
    assert len(_outputs(out)) < 4 and _hashes(src) == before


# ------------------------------------------------------------------------------------------ names and file kinds


def test_unicode_spaces_and_long_names(model_dir, tmp_path, capsys):
    src = tmp_path / "in"
    _rgb(src / "fötö 写真 x.png")
    _rgb(src / ("l" * 250 + ".jpeg"))  # fits, but the temporary name beside it used to be too long
    _rgb(src / os.fsdecode(b"bad-\xff.png"))  # not UTF-8: printing its name must not crash the run
    too_long = tmp_path / ("n" * 253)
    Image.new("RGB", (16, 16)).save(too_long, format="PNG")  # no suffix: the output `.png` name is 257 bytes
    before = _hashes(tmp_path)
    out = tmp_path / "out"
    assert _run(model_dir, src, too_long, "-o", out) == 1
    err = capsys.readouterr().err
    assert "restored 3 of 4" in err and "is over 255 bytes" in err and "n" * 253 in err
    assert sorted(_outputs(out)) == sorted(["fötö 写真 x.png", "l" * 250 + ".png", os.fsdecode(b"bad-\xff.png")])
    assert _hashes(tmp_path).items() >= before.items()


def test_symlinks_loops_pipes_and_broken_files(model_dir, tmp_path, capsys):
    src = tmp_path / "in"
    real = _rgb(tmp_path / "elsewhere" / "real.png")
    _rgb(src / "ok.png", seed=1)
    (src / "link.png").symlink_to(real)  # a symlinked input is fine
    (src / "loop").symlink_to(src)  # a folder loop: searched once, never forever
    (src / "dangling.png").symlink_to(tmp_path / "gone.png")
    (src / "self.png").symlink_to(src / "self.png")
    os.mkfifo(src / "pipe.png")  # opening it would block forever
    (src / "empty.png").write_bytes(b"")
    full = (src / "ok.png").read_bytes()
    (src / "truncated.png").write_bytes(full[: len(full) // 2])
    (src / "text.jpg").write_text("not an image")
    (src / "notes.txt").write_text("ignored, but counted")
    before = _hashes(tmp_path)
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("restore run hung"))
    signal.alarm(60)
    try:
        code = _run(model_dir, src, "-o", tmp_path / "out")
    finally:
        signal.alarm(0)
    err = capsys.readouterr().err
    assert code == 1 and "restored 2 of 8" in err
    for name, why in [("dangling.png", "a broken symbolic link"), ("self.png", "cannot be opened (Too many levels"),
                      ("pipe.png", "not a regular file"), ("empty.png", "not a readable image"),
                      ("truncated.png", "not a readable image"), ("text.jpg", "not a readable image")]:
        assert f"{name}: {why}" in err, (name, err)
    assert "already searched" in err and "1 file(s) without an image suffix ignored (.txt: 1)" in err
    assert _outputs(tmp_path / "out") == ["link.png", "ok.png"] and _hashes(tmp_path).items() >= before.items()


def test_other_formats_and_modes(model_dir, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    rgb = Image.open(_rgb(tmp_path / "base.png"))
    rgb.save(src / "w.webp", lossless=True)
    rgb.save(src / "b.bmp")
    rgb.save(src / "p.ppm")
    rgb.convert("CMYK").save(src / "cmyk.jpg")
    pal = rgb.convert("P")
    pal.info["transparency"] = 0
    pal.save(src / "pal.png", transparency=0)
    rgb.convert("LA").save(src / "la.png")
    rgb.convert("1").save(src / "bits.png")
    Image.fromarray(np.arange(256, dtype=np.uint16).reshape(16, 16) * 200).save(src / "gray16.png")
    rgb.convert("RGBA").save(src / "rgba.tif")
    key = tuple(int(v) for v in np.asarray(rgb)[0, 0])
    rgb.save(src / "key.png", transparency=key)  # tRNS colour keys: pixels of that value are transparent
    rgb.convert("L").save(src / "keyl.png", transparency=int(np.asarray(rgb.convert("L"))[0, 0]))
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgb.save(src / "icc.jpg", icc_profile=icc)
    rgb.convert("CMYK").save(src / "cmyk_icc.jpg", icc_profile=icc)  # an RGB profile on CMYK pixels: unusable
    rgb.save(src / "phone.avif", quality=90)
    rgb.save(src / "scan.jp2")
    before = _hashes(src)
    out = tmp_path / "out"
    assert _run(model_dir, src, "-o", out) == 0
    err = capsys.readouterr().err
    assert "restored 15 of 15" in err and "cmyk_icc.jpg: its ICC profile cannot convert CMYK" in err
    modes = {n: Image.open(out / n).mode for n in _outputs(out)}
    assert modes == {"w.png": "RGB", "b.bmp": "RGB", "p.png": "RGB", "cmyk.png": "RGB", "pal.png": "RGBA",
                     "la.png": "LA", "bits.png": "L", "gray16.png": "I;16", "rgba.tif": "RGBA", "icc.png": "RGB",
                     "key.png": "RGBA", "keyl.png": "LA", "cmyk_icc.png": "RGB", "phone.png": "RGB", "scan.png": "RGB"}
    assert Image.open(out / "icc.png").info.get("icc_profile") == icc  # colours mean the same after restoring
    assert "icc_profile" not in Image.open(out / "cmyk_icc.png").info
    keyed = np.asarray(rgb) == np.array(key)
    clear = np.asarray(Image.open(out / "key.png"))[..., 3][::2, ::2]
    assert keyed.all(-1).any() and (clear[keyed.all(-1)] < 128).all() and (clear[~keyed.all(-1)] > 128).all()
    assert _hashes(src) == before


def test_ctrl_c_leaves_only_complete_outputs(model_dir, tmp_path, capsys):
    src = tmp_path / "in"
    for i in range(40):
        _rgb(src / f"{i:02d}.png", size=(32, 32), seed=i)
    before = _hashes(src)
    out = tmp_path / "out"
    running = threading.Event()

    def interrupt_after_first_output() -> None:  # a real SIGINT, as Ctrl-C sends, once the run is under way
        while running.is_set():
            if out.exists() and any(not p.name.startswith(".") for p in out.iterdir()):
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.005)

    def on_sigint(*_) -> None:  # Python's default handler, but a late signal cannot hit pytest itself
        if running.is_set():
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    running.set()
    watcher = threading.Thread(target=interrupt_after_first_output, daemon=True)
    watcher.start()
    try:
        code = _run(model_dir, src, "-o", out)
    finally:
        running.clear()
        watcher.join()
        signal.signal(signal.SIGINT, previous)
    err = capsys.readouterr().err
    assert code == 130, err
    assert "interrupted" in err and "before the interrupt" in err
    assert 0 < len(_outputs(out)) < 40 and _hashes(src) == before
