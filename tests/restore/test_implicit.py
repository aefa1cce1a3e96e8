"""Arbitrary-scale SR (`sr_any`): LIIF/LTE tails equal to the reference math, shapes, tiling, CLI, training samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import restore
from restore.implicit import LIIFTail, LTETail, make_cell, make_coord
from restore.inference import tiled_query
from restore.model import RestorationModel
from tasks.degradations import sr_any_batch
from tasks.imresize import imresize, output_size
from tasks.registry import get_task

SMALL_TAIL = {"implicit_hidden": [16, 16], "implicit_dim": 16}
SWINIR_TINY = dict(embed_dim=12, depths=[1], num_heads=[2], window_size=4)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a - b).pow(2).mean()))


@pytest.fixture(scope="module")
def edt_any():
    torch.manual_seed(0)
    return RestorationModel("edt_tiny", tasks=["sr_x2", "sr_any"], arch=SMALL_TAIL).eval()


# ------------------------------------------------------------------------------------------ size rule


def test_output_size_is_matlab_ceil_at_non_integer_scales():
    assert output_size((37, 53), 2.7) == (100, 144)  # 99.9 -> 100, 143.1 -> 144
    assert output_size((5, 7), (1.5, 3.5)) == (8, 25)  # 7.5 -> 8, 24.5 -> 25: ceil, not round
    assert output_size((10, 13), 2.7) == (27, 36)  # 10 * 2.7 is 27.000000000000004 in binary: still 27
    assert output_size((9, 9), 1 / 3 * 2) == (6, 6)
    x = torch.rand(1, 3, 37, 53)
    assert imresize(x, 2.7).shape[-2:] == (100, 144)
    assert imresize(x, (1.5, 3.5)).shape[-2:] == output_size((37, 53), (1.5, 3.5)) == (56, 186)


def test_make_coord_is_pixel_centres():
    c = make_coord((2, 4))
    assert c.shape == (2, 4, 2)
    assert torch.allclose(c[:, 0, 0], torch.tensor([-0.5, 0.5]))
    assert torch.allclose(c[0, :, 1], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    assert torch.equal(make_cell((4, 8), 3)[0, 0], torch.tensor([0.5, 0.25]))


# ------------------------------------------------------------- faithfulness: transcriptions of the references


def _ref_make_coord(shape):
    """yinboc/liif utils.py make_coord (flatten=False), as written there."""
    seqs = []
    for n in shape:
        r = (1 - (-1)) / (2 * n)
        seqs.append(-1 + r + (2 * r) * torch.arange(n).float())
    return torch.stack(torch.meshgrid(*seqs, indexing="ij"), dim=-1)


def _ref_mlp(x, mlp):
    """yinboc/liif models/mlp.py: Linear/ReLU stack (weights taken from ours, applied layer by layer)."""
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    shape = x.shape[:-1]
    x = x.view(-1, x.shape[-1])
    for i, lin in enumerate(linears):
        x = F.linear(x, lin.weight, lin.bias)
        if i < len(linears) - 1:
            x = F.relu(x)
    return x.view(*shape, -1)


def _ref_liif_query_rgb(feat, coord, cell, imnet):
    """yinboc/liif models/liif.py LIIF.query_rgb with feat_unfold, local_ensemble and cell_decode on (.cuda() dropped)."""
    feat = F.unfold(feat, 3, padding=1).view(feat.shape[0], feat.shape[1] * 9, feat.shape[2], feat.shape[3])
    vx_lst, vy_lst, eps_shift = [-1, 1], [-1, 1], 1e-6
    rx = 2 / feat.shape[-2] / 2
    ry = 2 / feat.shape[-1] / 2
    feat_coord = _ref_make_coord(feat.shape[-2:]).permute(2, 0, 1).unsqueeze(0).expand(feat.shape[0], 2, *feat.shape[-2:])
    preds, areas = [], []
    for vx in vx_lst:
        for vy in vy_lst:
            coord_ = coord.clone()
            coord_[:, :, 0] += vx * rx + eps_shift
            coord_[:, :, 1] += vy * ry + eps_shift
            coord_.clamp_(-1 + 1e-6, 1 - 1e-6)
            q_feat = F.grid_sample(feat, coord_.flip(-1).unsqueeze(1), mode="nearest",
                                   align_corners=False)[:, :, 0, :].permute(0, 2, 1)
            q_coord = F.grid_sample(feat_coord, coord_.flip(-1).unsqueeze(1), mode="nearest",
                                    align_corners=False)[:, :, 0, :].permute(0, 2, 1)
            rel_coord = coord - q_coord
            rel_coord[:, :, 0] *= feat.shape[-2]
            rel_coord[:, :, 1] *= feat.shape[-1]
            inp = torch.cat([q_feat, rel_coord], dim=-1)
            rel_cell = cell.clone()
            rel_cell[:, :, 0] *= feat.shape[-2]
            rel_cell[:, :, 1] *= feat.shape[-1]
            inp = torch.cat([inp, rel_cell], dim=-1)
            bs, q = coord.shape[:2]
            preds.append(imnet(inp.view(bs * q, -1)).view(bs, q, -1))
            areas.append(torch.abs(rel_coord[:, :, 0] * rel_coord[:, :, 1]) + 1e-9)
    tot_area = torch.stack(areas).sum(dim=0)
    t = areas[0]; areas[0] = areas[3]; areas[3] = t  # noqa: E702
    t = areas[1]; areas[1] = areas[2]; areas[2] = t  # noqa: E702
    ret = 0
    for pred, area in zip(preds, areas):
        ret = ret + pred * (area / tot_area).unsqueeze(-1)
    return ret


def _ref_lte_query_rgb(inp, feat, coord, cell, lte):
    """jaewon-lee-b/lte models/lte.py LTE.gen_feat + query_rgb (.cuda() dropped), convs/linears from ``lte``."""
    feat_coord = _ref_make_coord(inp.shape[-2:]).permute(2, 0, 1).unsqueeze(0).expand(inp.shape[0], 2, *inp.shape[-2:])
    coef = F.conv2d(feat, lte.coef.weight, lte.coef.bias, padding=1)
    freq = F.conv2d(feat, lte.freq.weight, lte.freq.bias, padding=1)
    vx_lst, vy_lst, eps_shift = [-1, 1], [-1, 1], 1e-6
    rx = 2 / feat.shape[-2] / 2
    ry = 2 / feat.shape[-1] / 2
    preds, areas = [], []
    for vx in vx_lst:
        for vy in vy_lst:
            coord_ = coord.clone()
            coord_[:, :, 0] += vx * rx + eps_shift
            coord_[:, :, 1] += vy * ry + eps_shift
            coord_.clamp_(-1 + 1e-6, 1 - 1e-6)
            q_coef = F.grid_sample(coef, coord_.flip(-1).unsqueeze(1), mode="nearest",
                                   align_corners=False)[:, :, 0, :].permute(0, 2, 1)
            q_freq = F.grid_sample(freq, coord_.flip(-1).unsqueeze(1), mode="nearest",
                                   align_corners=False)[:, :, 0, :].permute(0, 2, 1)
            q_coord = F.grid_sample(feat_coord, coord_.flip(-1).unsqueeze(1), mode="nearest",
                                    align_corners=False)[:, :, 0, :].permute(0, 2, 1)
            rel_coord = coord - q_coord
            rel_coord[:, :, 0] *= feat.shape[-2]
            rel_coord[:, :, 1] *= feat.shape[-1]
            rel_cell = cell.clone()
            rel_cell[:, :, 0] *= feat.shape[-2]
            rel_cell[:, :, 1] *= feat.shape[-1]
            bs, q = coord.shape[:2]
            q_freq = torch.stack(torch.split(q_freq, 2, dim=-1), dim=-1)
            q_freq = torch.mul(q_freq, rel_coord.unsqueeze(-1))
            q_freq = torch.sum(q_freq, dim=-2)
            q_freq += F.linear(rel_cell.view((bs * q, -1)), lte.phase.weight).view(bs, q, -1)
            q_freq = torch.cat((torch.cos(np.pi * q_freq), torch.sin(np.pi * q_freq)), dim=-1)
            x = torch.mul(q_coef, q_freq)
            preds.append(_ref_mlp(x.contiguous().view(bs * q, -1), lte.imnet).view(bs, q, -1))
            areas.append(torch.abs(rel_coord[:, :, 0] * rel_coord[:, :, 1]) + 1e-9)
    tot_area = torch.stack(areas).sum(dim=0)
    t = areas[0]; areas[0] = areas[3]; areas[3] = t  # noqa: E702
    t = areas[1]; areas[1] = areas[2]; areas[2] = t  # noqa: E702
    ret = 0
    for pred, area in zip(preds, areas):
        ret = ret + pred * (area / tot_area).unsqueeze(-1)
    ret += F.grid_sample(inp, coord.flip(-1).unsqueeze(1), mode="bilinear", padding_mode="border",
                         align_corners=False)[:, :, 0, :].permute(0, 2, 1)
    return ret


def _queries(b: int, out_size: tuple[int, int], extra: int = 200, seed: int = 0):
    """A whole output grid (pixel centres) plus random points, including the image's corners and edges."""
    g = torch.Generator().manual_seed(seed)
    grid = make_coord(out_size).reshape(1, -1, 2).expand(b, -1, -1)
    rand = torch.rand(b, extra, 2, generator=g) * 2 - 1
    rand[:, :4] = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [0.0, 1.0]])
    coord = torch.cat([grid, rand], dim=1)
    cell = make_cell(out_size, coord.shape[1], b).clone()
    cell[:, grid.shape[1]:] *= torch.rand(b, extra, 1, generator=g) + 0.5  # cells of other scales too
    return coord, cell


def test_liif_tail_matches_reference_math():
    torch.manual_seed(1)
    tail = LIIFTail(6, hidden=(16, 16), feat_unfold=True, local_ensemble=True, cell_decode=True)
    feat = torch.randn(2, 6, 7, 9)
    coord, cell = _queries(2, (17, 20))
    with torch.no_grad():
        ours = tail(feat, torch.rand(2, 3, 7, 9), coord, cell)
        ref = _ref_liif_query_rgb(feat, coord, cell, lambda x: _ref_mlp(x, tail.imnet))
    assert ours.shape == (2, coord.shape[1], 3)
    assert (ours - ref).abs().max() <= 1e-5


def test_lte_tail_matches_reference_math():
    torch.manual_seed(2)
    tail = LTETail(6, dim=16, hidden=(16, 16))
    feat, inp = torch.randn(2, 6, 7, 9), torch.randn(2, 3, 7, 9)
    coord, cell = _queries(2, (23, 14))
    with torch.no_grad():
        ours = tail(feat, inp, coord, cell)
        ref = _ref_lte_query_rgb(inp, feat, coord, cell, tail)
    assert (ours - ref).abs().max() <= 1e-5


def test_chunked_decoding_equals_one_pass():
    torch.manual_seed(3)
    tail = LTETail(4, dim=8, hidden=(8,))
    feat, inp = torch.randn(1, 4, 5, 6), torch.rand(1, 3, 5, 6)
    coord, cell = _queries(1, (11, 13))
    with torch.no_grad():
        one, chunked = tail(feat, inp, coord, cell, chunk=None), tail(feat, inp, coord, cell, chunk=37)
    # not bit-equal on every CPU: oneDNN/MKL block a Linear by its row count, so a 37-row chunk may round its last
    # bit differently from the whole (seen on an AVX-512/AMX Xeon); a misplaced or dropped chunk moves values by ~0.1
    torch.testing.assert_close(chunked, one, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------- the model's task


@pytest.mark.parametrize("variant,arch", [("edt_tiny", SMALL_TAIL), ("swinir", {**SWINIR_TINY, **SMALL_TAIL})])
def test_shapes_for_integer_non_integer_and_asymmetric_scales(variant, arch):
    torch.manual_seed(0)
    model = RestorationModel(variant, tasks=["sr_any"], arch=arch).eval()
    x = torch.rand(1, 3, 13, 17)  # odd sizes: padded for the body, cropped back for the tail
    with torch.no_grad():
        for scale, expect in [(2, (26, 34)), (2.7, (36, 46)), ((1.5, 3.2), (20, 55)), (1, (13, 17))]:
            y = model(x, "sr_any", scale=scale)
            assert y.shape == (1, 3, *expect) == (1, 3, *output_size((13, 17), scale)), scale
            assert torch.isfinite(y).all()
        assert model(x, "sr_any", size=(40, 21)).shape == (1, 3, 40, 21)


def test_hat_body_serves_sr_any_and_ipt_refuses_it_clearly():
    hat = RestorationModel("hat", tasks=["sr_any"], arch=dict(embed_dim=12, depths=[1], num_heads=[2], window_size=4,
                                                               squeeze_factor=6, **SMALL_TAIL)).eval()
    with torch.no_grad():
        assert hat(torch.rand(1, 3, 9, 10), "sr_any", scale=1.7).shape == (1, 3, 16, 17)
    small_ipt = dict(patch_size=12, patch_dim=3, n_feats=8, num_heads=2, num_layers=2)
    with pytest.raises(ValueError, match="runs fixed 12x12 windows; use an EDT, SwinIR or HAT"):
        RestorationModel("ipt", tasks=["sr_any"], arch=small_ipt)


def test_scale_and_size_are_checked(edt_any):
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="exactly one of scale"):
        edt_any(x, "sr_any")
    with pytest.raises(ValueError, match="exactly one of scale"):
        edt_any(x, "sr_any", scale=2, size=(16, 16))
    with pytest.raises(ValueError, match="positive number"):
        edt_any(x, "sr_any", scale=-2)
    with pytest.raises(ValueError, match="two integers"):
        edt_any(x, "sr_any", size=(16.5, 16))
    with pytest.raises(ValueError, match="fixed scale"):
        edt_any(x, "sr_x2", scale=2)
    with pytest.raises(ValueError, match="no fixed scale"):
        edt_any.scale("sr_any")
    with pytest.raises(ValueError, match="implicit_tail"):
        RestorationModel("edt_tiny", tasks=["sr_any"], arch={"implicit_tail": "metasr"})
    assert get_task("sr_any").kind == "sr" and get_task("sr_any").protocol == {"y_channel": True, "crop_border": 4}


def test_liif_tail_choice_round_trips_through_config(tmp_path):
    torch.manual_seed(0)
    model = RestorationModel("edt_tiny", tasks=["sr_any", "sr_x2"],
                             arch={"implicit_tail": "liif", "implicit_hidden": [8, 8]}).eval()
    assert isinstance(model.tails["sr_any"], LIIFTail)
    lte = RestorationModel("edt_tiny", tasks=["sr_any"], arch={"implicit_hidden": [8]})
    assert lte.arch["implicit_tail"] == "lte" and lte.arch["implicit_dim"] == 256  # the default, recorded
    model.save_pretrained(tmp_path / "m")
    back = RestorationModel.from_pretrained(tmp_path / "m").eval()
    assert back.config_dict() == model.config_dict() and back.arch["implicit_tail"] == "liif"
    x = torch.rand(1, 3, 11, 9)
    with torch.no_grad():
        assert torch.equal(back(x, "sr_any", scale=3.5), model(x, "sr_any", scale=3.5))
    fresh = RestorationModel("edt_tiny", tasks=["sr_x2"]).add_task("sr_any")
    assert fresh.arch["implicit_tail"] == "lte"


def test_forward_multi_runs_sr_any_in_the_shared_body_pass(edt_any):
    x2, xa = torch.rand(2, 3, 12, 12), torch.rand(3, 3, 12, 12)
    coord, cell = _queries(3, (30, 30), extra=10)
    with torch.no_grad():
        out = edt_any.forward_multi({"sr_x2": x2, "sr_any": (xa, coord, cell)})
        assert out["sr_any"].shape == (3, coord.shape[1], 3)
        assert torch.allclose(out["sr_any"], edt_any.query_points(xa, "sr_any", coord, cell), atol=1e-5)
        assert torch.allclose(out["sr_x2"], edt_any(x2, "sr_x2"), atol=1e-5)
        grid = edt_any.query_points(xa, "sr_any", coord[:, :900], cell[:, :900])
        full = edt_any(xa, "sr_any", size=(30, 30))
        assert torch.allclose(grid.transpose(1, 2).reshape(3, 3, 30, 30), full, atol=1e-6)
    with pytest.raises(ValueError, match="tuple"):
        edt_any.forward_multi({"sr_any": xa})


# ------------------------------------------------------------------------------------------- inference


def test_tile_covering_the_image_is_bit_identical(edt_any):
    x = torch.rand(1, 3, 21, 30)
    with torch.no_grad():
        ref = edt_any(x, "sr_any", scale=2.7).clamp(0, 1)
    assert torch.equal(restore.restore_image(edt_any, x, "sr_any", scale=2.7, tile=48, overlap=8), ref)
    assert torch.equal(restore.restore_image(edt_any, x, "sr_any", scale=2.7), ref)


def test_tiled_query_is_exact_for_a_pointwise_field():
    """A field read off the input at the query point (no context): tiling must reproduce it wherever it blends."""

    def field(patch, coord, cell):  # the patch's bilinear value at each point
        return F.grid_sample(patch, coord.flip(-1).unsqueeze(1), mode="bilinear", align_corners=False)[:, :, 0].transpose(1, 2)

    x = torch.rand(1, 3, 50, 61)
    for size in [(135, 90), (20, 13)]:  # up, and down (tiles without any output pixel centre)
        out = tiled_query(field, x, size, tile=16, overlap=8)
        full = field(x, make_coord(size).reshape(1, -1, 2), None).transpose(1, 2).reshape(1, 3, *size)
        assert (out - full).abs().max() < 1e-5


def test_transformer_tiling_is_close_and_seamless():
    torch.manual_seed(0)
    model = RestorationModel("edt_tiny", tasks=["sr_any"], arch=SMALL_TAIL).eval()
    x = torch.rand(1, 3, 60, 100)
    with torch.no_grad():
        for p in model.tails["sr_any"].parameters():
            p.mul_(3)  # at init the output is nearly LTE's bilinear skip; make the body's features dominate it
        full = model(x, "sr_any", scale=2.7)
        skip = F.interpolate(x, size=full.shape[-2:], mode="bilinear", align_corners=False)
    assert float((full - skip).std()) > 0.1
    # 48 px tiles (2 EDT windows) with a 16 px overlap: 3 x 4 tiles
    tiled = restore.restore_image(model, x, "sr_any", scale=2.7, tile=48, overlap=16)
    assert tiled.shape == full.shape == (1, 3, 162, 270)
    assert psnr(tiled, full.clamp(0, 1)) >= 45
    assert float((tiled - full.clamp(0, 1)).abs().max()) < 0.02  # no seam: nowhere a visible step


def test_restore_image_sr_any_pil_with_alpha_and_size(edt_any):
    rgba = Image.fromarray(np.random.default_rng(0).integers(0, 256, (9, 11, 4), dtype=np.uint8), "RGBA")
    out = restore.restore_image(edt_any, rgba, "sr_any", size=(20, 31))
    assert out.mode == "RGBA" and out.size == (31, 20)
    assert restore.restore_image(edt_any, rgba, "sr_any", scale=(2.0, 1.5), ensemble=True).size == (17, 18)
    with pytest.raises(ValueError, match="ensemble"):
        restore.restore_image(edt_any, torch.rand(3, 9, 9), "sr_any", scale=(2.0, 1.5), ensemble=True)
    with pytest.raises(ValueError, match="sr_any"):
        restore.restore_image(edt_any, rgba, "sr_x2", scale=2)


def test_cli_run_sr_any_scale_and_size(edt_any, tmp_path, capsys):
    from restore.cli import main

    edt_any.save_pretrained(tmp_path / "m")
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(src / "a.png")
    base = ["run", "--model", str(tmp_path / "m"), "--task", "sr_any", str(src), "--no-progress"]
    assert main(base + ["-o", str(tmp_path / "o1"), "--scale", "2.7"]) == 0
    assert Image.open(tmp_path / "o1" / "a.png").size == (54, 44)  # ceil(20 * 2.7) x ceil(16 * 2.7)
    assert main(base + ["-o", str(tmp_path / "o2"), "--size", "33x25", "--tile", "24"]) == 0
    assert Image.open(tmp_path / "o2" / "a.png").size == (33, 25)
    assert main(base + ["-o", str(tmp_path / "o3")]) == 2
    assert "--scale" in capsys.readouterr().err
    # refused before the model loads (a model that does not exist would be reported instead), not per image
    bad = ["run", "--model", str(tmp_path / "no-model"), "--task", "sr_any", str(src), "--no-progress"]
    assert main(bad + ["-o", str(tmp_path / "o4"), "--scale", "2", "--tile", "24", "--ensemble"]) == 2
    err = capsys.readouterr().err
    assert "drop --tile or --ensemble" in err and "cannot load model" not in err, err
    assert not (tmp_path / "o4").exists()


# ------------------------------------------------------------------------------------ training samples


def test_sr_any_batch_follows_the_liif_protocol_and_is_deterministic():
    hr = torch.rand(3, 3, 200, 210)
    a = sr_any_batch(hr, torch.Generator().manual_seed(5))
    b = sr_any_batch(hr, torch.Generator().manual_seed(5))
    c = sr_any_batch(hr, torch.Generator().manual_seed(6))
    for f in ("lq", "coord", "cell", "gt", "scale"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.coord, c.coord)
    assert a.lq.shape == (3, 3, 48, 48) and a.coord.shape == a.cell.shape == (3, 2304, 2) and a.gt.shape == (3, 2304, 3)
    assert bool(((a.scale >= 1) & (a.scale <= 4)).all())
    # the LR is on uint8 levels and the cell is one HR pixel of a round(48 s) crop
    assert torch.equal(a.lq, (a.lq * 255).round() / 255)
    assert torch.allclose(a.cell[:, 0, 0].double(), 2 / (48 * a.scale), atol=1e-6)
    # each gt is the HR pixel under its coordinate: find the crop from the first sample's pixels
    for i in range(3):
        size = round(48 * float(a.scale[i]))
        rows = ((a.coord[i, :, 0] + 1) * size / 2 - 0.5).round().long()
        cols = ((a.coord[i, :, 1] + 1) * size / 2 - 0.5).round().long()
        assert len(set((rows * size + cols).tolist())) == 2304  # sampled without replacement
        assert rows.min() >= 0 and rows.max() < size and cols.max() < size
    with pytest.raises(ValueError, match="too small"):
        sr_any_batch(torch.rand(1, 3, 100, 100), torch.Generator())
    with pytest.raises(ValueError, match="scale_range"):
        sr_any_batch(hr, torch.Generator(), scale_range=(0.5, 2))


def test_sr_any_batch_gt_matches_its_crop():
    # one scale (2): the crop and its LR are recoverable, and the gt values are pixels of hr
    hr = torch.rand(1, 3, 96, 96)
    s = sr_any_batch(hr, torch.Generator().manual_seed(0), scale_range=(2.0, 2.0), num_queries=50)
    assert float(s.scale[0]) == 2.0
    flat = hr[0].reshape(3, -1).t()  # (H*W, 3): with a 96 px crop of a 96 px image the crop is hr itself
    rows = ((s.coord[0, :, 0] + 1) * 48 - 0.5).round().long()
    cols = ((s.coord[0, :, 1] + 1) * 48 - 0.5).round().long()
    assert torch.equal(s.gt[0], flat[rows * 96 + cols])
    assert torch.equal(s.lq, imresize(hr, size=(48, 48), quantize=True))
    assert math.isclose(float(s.cell[0, 0, 0]), 2 / 96, rel_tol=1e-6)


def test_sr_any_batch_crops_every_position_uniformly():
    # one scale (2) on 100 px images: a 96 px crop at one of 5 x 5 corners, each about equally often
    hr = torch.arange(100.0).view(1, 1, 1, 100).expand(64, 3, 100, 100) / 100  # the column index, in [0, 1)
    hr = hr + hr.transpose(2, 3) * 100  # + the row index * 100 / 100: pixel (r, c) = r + c / 100
    g = torch.Generator().manual_seed(0)
    corners = []
    for _ in range(8):
        s = sr_any_batch(hr, g, scale_range=(2.0, 2.0), num_queries=1)
        # gt pixel = top + row + (left + col) / 100, and coord gives (row, col) inside the crop
        rows = ((s.coord[:, 0, 0] + 1) * 48 - 0.5).round()
        cols = ((s.coord[:, 0, 1] + 1) * 48 - 0.5).round()
        top = (s.gt[:, 0, 0] - rows).floor()
        left = ((s.gt[:, 0, 0] - s.gt[:, 0, 0].floor()) * 100).round() - cols
        corners += list(zip(top.long().tolist(), left.long().tolist()))
    counts = torch.zeros(5, 5)
    for t, l in corners:
        counts[t, l] += 1
    assert counts.sum() == 512 and bool((counts > 0).all())  # every corner, none outside
    assert float(counts.max()) < 3 * 512 / 25  # no corner drawn far more often than 1/25


@pytest.mark.parametrize("tail", ["lte", "liif"])
def test_implicit_tail_runs_in_bf16_with_fp32_coordinates(tail):
    """bf16 training keeps the query points in fp32 (the engine does not cast them): the tail must accept that and
    stay close to its fp32 result."""
    from restore.model import RestorationModel

    torch.manual_seed(0)
    model = RestorationModel("edt_tiny", tasks=["sr_any"], arch={"implicit_tail": tail}).eval()
    x = torch.rand(1, 3, 12, 12)
    coord = torch.rand(1, 50, 2) * 2 - 1
    cell = torch.full((1, 50, 2), 2 / 36)
    with torch.no_grad():
        ref = model.query_points(x, "sr_any", coord, cell)
        low = model.to(torch.bfloat16).query_points(x.bfloat16(), "sr_any", coord, cell)
    assert torch.isfinite(low.float()).all()
    assert (low.float() - ref).abs().max() < 0.1
