"""The demo's pieces (corpus staging, budgeted stages, plot, picture, summary) and a ``--quick`` pass of the whole."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from finetune import demo, demo_stages
from finetune.demo_process import StageClock, stage_env
from tests.finetune.helpers import BENCHMARKS

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def test_embedded_corpus_is_real_photos_and_held_out_images_stay_out(tmp_path):
    staged = demo.stage_corpus(tmp_path / "corpus", hold_out=True)
    train = sorted(p.name for p in (tmp_path / "corpus" / "train").iterdir())
    held = sorted(p.name for p in (tmp_path / "corpus" / "heldout").iterdir())
    assert held == sorted(demo.HELD_OUT) and not set(held) & set(train)
    assert sorted(train + held) == sorted(demo.EMBEDDED_PHOTOS)
    assert not {"chessboard_RGB.png", "logo.png", "text.png", "phantom.png", "color.png"} & set(train)
    for name in train:
        with Image.open(tmp_path / "corpus" / "train" / name) as im:
            assert min(im.size) >= 256, name  # real photographs, large enough for every training patch
    assert staged["train"] == train and staged["heldout_dir"] is not None
    # without hold-out every photo trains; a rerun replaces the staged folder
    again = demo.stage_corpus(tmp_path / "corpus")
    assert sorted(again["train"]) == sorted(demo.EMBEDDED_PHOTOS) and again["heldout_dir"] is None
    assert not (tmp_path / "corpus" / "heldout").exists()


def test_user_folder_is_linked_flat_and_checked(tmp_path):
    src = tmp_path / "src"
    for cls in ("a", "b"):
        (src / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 40), (i * 60, 0, 0)).save(src / cls / f"img{i}.png")
    (src / "notes.txt").write_text("not an image")
    staged = demo.stage_corpus(tmp_path / "corpus", src, hold_out=True)
    assert staged["heldout"] == ["b__img0.png", "b__img1.png", "b__img2.png"]
    assert staged["train"] == ["a__img0.png", "a__img1.png", "a__img2.png"]
    link = tmp_path / "corpus" / "train" / "a__img1.png"
    assert link.is_symlink() and link.resolve() == (src / "a" / "img1.png").resolve()
    with pytest.raises(FileNotFoundError, match="no such folder"):
        demo.stage_corpus(tmp_path / "c2", tmp_path / "missing")
    few = tmp_path / "few"
    few.mkdir()
    for i in range(4):
        Image.new("RGB", (40, 40)).save(few / f"{i}.png")
    with pytest.raises(ValueError, match="found 4 images.*at least 5"):
        demo.stage_corpus(tmp_path / "c3", few, hold_out=True)
    assert len(demo.stage_corpus(tmp_path / "c3", few)["train"]) == 4  # no hold-out: 2 images are enough


def test_stage_past_its_budget_is_stopped(tmp_path):
    log = tmp_path / "stage.log"
    script = "import time; print('step 1/9 | loss 0.5', flush=True); time.sleep(120)"
    t0 = time.time()
    code, stopped = demo.run_stage([sys.executable, "-c", script], log, budget_s=3, env=stage_env(1))
    assert stopped and code is not None and code != 0
    assert time.time() - t0 < 60
    assert "step 1/9" in log.read_text()
    code, stopped = demo.run_stage([sys.executable, "-c", "print('ok')"], log, budget_s=60, env=stage_env(1))
    assert (code, stopped) == (0, False) and log.read_text() == "ok\n"


def test_a_failed_stage_raises_with_its_log_and_a_stop_only_where_allowed(tmp_path):
    run = demo_stages.DemoRun(tmp_path, demo.QUICK, None, ranks=1, cores=1)
    crash = [sys.executable, "-c", "import sys; print('reading shard 3'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"(?s)shards failed \(exit 3\):\nreading shard 3"):
        run.execute(crash, "shards", 60, "shards failed (exit {code}):")
    assert (tmp_path / "work" / "logs" / "shards.log").read_text() == "reading shard 3\n"
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    assert run.execute(sleep, "pretrain", 2, "pretraining failed (exit {code}):", may_stop=True) is True
    with pytest.raises(RuntimeError, match="export failed"):
        run.execute(sleep, "export", 2, "export failed (exit {code})")


def test_read_log_and_plot(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [json.dumps({"event": "start"})]
    lines += [json.dumps({"event": "train", "step": s, "loss": 1 / s, "loss:sr_x2": 0.5 / s, "loss:derain": 0.7 / s})
              for s in range(1, 6)]
    lines.append('{"event": "train", "step": 6, "lo')  # cut by a stopped run
    (run / "log.jsonl").write_text("\n".join(lines))
    records = demo.read_log(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    history = [{"step": s, "sr_x2/Set5/psnr": 30 + s} for s in (0, 5)]
    size = _is_png(demo.plot_curves(records, records, history, tmp_path / "curves.png",
                                    metric="sr_x2/Set5/psnr", bicubic=33.67))
    assert size == (1100, 450)
    assert demo.read_log(tmp_path / "nothing") == []


def _sr_folder(root: Path, with_lr: bool) -> Path:
    from tasks.imresize import imresize
    from tasks.io import to_uint8

    g = torch.Generator().manual_seed(0)
    (root / "HR").mkdir(parents=True)
    if with_lr:
        (root / "LR_bicubic" / "X2").mkdir(parents=True)
    for i, (h, w) in enumerate([(50, 66), (61, 48)]):  # odd sizes: mod-crop matters
        smooth = torch.nn.functional.interpolate(torch.rand(1, 3, h // 4, w // 4, generator=g), size=(h, w),
                                                 mode="bilinear", align_corners=False)
        hr = to_uint8(smooth)[0].permute(1, 2, 0).numpy()
        Image.fromarray(hr).save(root / "HR" / f"im{i}.png")
        if with_lr:
            crop = to_uint8(smooth)[:, :, : h - h % 2, : w - w % 2]
            lr = to_uint8(imresize(crop, 0.5))[0].permute(1, 2, 0).numpy()
            Image.fromarray(lr).save(root / "LR_bicubic" / "X2" / f"im{i}x2.png")
    return root


@pytest.mark.parametrize("with_lr", [True, False])
def test_picture_reads_pairs_as_evaluation_does(tmp_path, with_lr):
    from restore.model import RestorationModel
    from tasks.evaluate import benchmark_pairs, bicubic_baseline
    from tasks.metrics import psnr

    folder = _sr_folder(tmp_path / "bench", with_lr)
    torch.manual_seed(0)
    model = RestorationModel("edt_tiny", tasks=["sr_x2"], arch={"window_size": [4, 8], "head_depth": 1}).eval()
    info = demo.before_after_picture(model, folder, tmp_path / "ba.png", crop=16, context=4, zoom=2)
    width, height = _is_png(tmp_path / "ba.png")
    assert (width, height) == (3 * 64 + 2 * 6, 64 + 16)
    assert info["image"] in ("im0", "im1") and info["lr_box"][2:] == [16, 16]
    assert set(info["psnr_crop"]) == {"bicubic", "ours (fine-tuned)"}
    assert all(0 < v < 100 for v in info["psnr_crop"].values())
    assert not list(tmp_path.glob(".ba*"))  # written through a temporary file, none left behind
    # the bicubic panel is the crop of the pairs tasks.evaluate scores, at the box the picture reports
    lq, gt = next((lq, gt) for name, lq, gt in benchmark_pairs(folder, "sr_x2") if name == info["image"])
    top, left, c, _ = info["lr_box"]
    assert 0 <= top <= lq.shape[-2] - c and 0 <= left <= lq.shape[-1] - c
    box = (..., slice(2 * top, 2 * (top + c)), slice(2 * left, 2 * (left + c)))
    bic = bicubic_baseline("sr_x2")(lq).float() / 255
    expected = float(psnr(bic[box], gt[box], crop_border=2, y_channel=True)[0])
    assert info["psnr_crop"]["bicubic"] == pytest.approx(expected, abs=1e-6)


def test_evaluation_set_follows_the_benchmark_root(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTORE_BENCHMARKS", str(tmp_path))
    folder, why = demo_stages.benchmark_dir()
    assert folder is None and "no Set5 folder" in why and str(tmp_path) in why
    (tmp_path / "Set5").mkdir()
    assert demo_stages.benchmark_dir() == (tmp_path / "Set5", "")


def test_summary_and_table(tmp_path):
    path = demo.write_summary({"evaluation": {"scores": {"bicubic": {"psnr": 33.67}}}}, tmp_path / "summary.json")
    assert json.loads(path.read_text())["evaluation"]["scores"]["bicubic"]["psnr"] == 33.67
    assert not list(tmp_path.glob(".*tmp*"))
    table = demo.summary_table([("bicubic", 33.666, 0.9299), ("fine-tuned", 34.1, 0.93)], "Set5 x2:")
    lines = table.splitlines()
    assert lines[0] == "Set5 x2:" and "33.67" in lines[2] and "0.9299" in lines[2] and "34.10" in lines[3]
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns


def test_finetune_steps_fit_the_budget_and_end_on_a_validation():
    full = demo.FULL
    planned, val_every = demo_stages.finetune_schedule(full, None)  # no speed measured: the upper bound
    assert (planned, val_every) == (full.ft_steps, full.ft_steps // full.validations)
    fast, slow = (demo_stages.finetune_schedule(full, s)[0] for s in (0.5, 2.0))
    assert full.ft_min_steps <= slow < fast <= full.ft_steps
    for sec in (0.5, 2.0):
        steps, every = demo_stages.finetune_schedule(full, sec)
        assert steps == every * full.validations  # the last step is a validation step
        assert steps * sec * full.ft_step_cost <= full.ft_budget_s
    floor = full.ft_min_steps // full.validations * full.validations  # a very slow machine: the minimum, rounded
    assert demo_stages.finetune_schedule(full, 1e3) == (floor, floor // full.validations)


def test_bad_pretrain_override_fails_before_anything_runs(tmp_path):
    import dataclasses

    settings = dataclasses.replace(demo.QUICK, pretrain=("stpes=4",))
    run = demo_stages.DemoRun(tmp_path, settings, None, ranks=1, cores=1)
    with pytest.raises(ValueError, match="unknown recipe key 'stpes'.*did you mean 'steps'"):
        demo_stages.pretrain(run, "unused-{0000..0000}.tar")
    assert not (tmp_path / "work").exists()  # no log, no run folder: the launcher never started


def test_work_folder_is_rebuilt_only_when_the_demo_made_it(tmp_path):
    demo_stages.prepare_work(tmp_path)
    (tmp_path / "work" / "stale.txt").write_text("from the last run")
    demo_stages.prepare_work(tmp_path)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [".restore-demo"]
    other = tmp_path / "other"
    (other / "work").mkdir(parents=True)
    (other / "work" / "mine.txt").write_text("not the demo's")
    with pytest.raises(ValueError, match="not made by the demo; pass another --out"):
        demo_stages.prepare_work(other)
    assert (other / "work" / "mine.txt").is_file()


def test_summary_holds_what_the_readme_describes(tmp_path, capsys):
    from finetune.demo_report import build_summary, print_outcome
    from tasks.evaluate import EvalResult

    clock = StageClock(total=2)
    with clock.stage(1, "stage the corpus"):
        pass
    run = demo_stages.DemoRun(tmp_path, demo.QUICK, None, ranks=2, cores=2)
    evalset = demo_stages.EvalSet(tmp_path / "Set5", "Set5")
    pre = demo_stages.Pretrained(tmp_path / "pre", tmp_path / "exp", [], steps=4, stopped=True, seconds_per_step=0.25)
    history = [{"step": 0, "sr_x2/Set5/psnr": 30.0}, {"step": 4, "sr_x2/Set5/psnr": 31.0}]
    ft = demo_stages.Finetuned(tmp_path / "ft", 4, 2, False, "last", tmp_path / "model", [{"step": 4, "loss": 0.1}],
                               history, "sr_x2/Set5/psnr")
    scores = {name: EvalResult("Set5", "sr_x2", 30.0 + i, 0.9) for i, name in enumerate(demo_stages.SCORE_NAMES)}
    corpus = {"source": "here", "train": ["a.png"], "heldout": [], "train_dir": "t", "heldout_dir": None}
    picture = {"image": "baby", "lr_box": [0, 0, 40, 40], "psnr_crop": {}}
    summary = build_summary(run, corpus, evalset, pre, ft, scores, picture, clock)
    assert list(summary) == ["evaluation", "corpus", "pretraining", "finetuning", "picture", "stage_seconds",
                             "total_seconds", "files"]
    assert set(summary["evaluation"]["scores"]) == set(demo_stages.SCORE_NAMES)
    assert summary["evaluation"]["fine_tuned_minus_bicubic_db"] == pytest.approx(2.0)
    assert summary["evaluation"]["images"] == 1 and summary["corpus"] == {"source": "here", "train": ["a.png"],
                                                                          "heldout": []}
    assert summary["pretraining"]["stopped_by_budget"] and summary["pretraining"]["steps"] == 4
    assert summary["finetuning"]["steps_done"] == 4 and summary["finetuning"]["validation_history"] == history
    assert summary["finetuning"]["overrides"][:2] == ["steps=4", "val_every=2"]
    assert set(summary["files"]) == {"model", "before_after", "training_curves", "summary", "logs"}
    assert Path(summary["files"]["before_after"]).name == "before_after.png"
    assert list(summary["stage_seconds"]) == ["stage the corpus"]
    print_outcome(summary, scores, clock)
    printed = capsys.readouterr().out
    assert "Set5 x2 (first 1 image(s)" in printed and "+2.00 dB vs bicubic (above bicubic)" in printed
    assert "(baby)" in printed


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo-out"
    proc = subprocess.run([sys.executable, "-m", "finetune.demo", "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for n in range(1, 8):
        assert f"[{n}/7]" in proc.stdout
    assert "PSNR (dB)" in proc.stdout and "bicubic" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    bench = "Set5" if (BENCHMARKS / "Set5").is_dir() else "held-out images"
    assert summary["evaluation"]["benchmark"] == bench
    scores = summary["evaluation"]["scores"]
    assert set(scores) == {"bicubic", "pretrained only (multi-task, no fine-tuning)", "fine-tuned (shipped in model/)"}
    assert all(10 < s["psnr"] < 60 and 0 < s["ssim"] <= 1 for s in scores.values())
    assert summary["pretraining"]["steps"] == 4 and summary["pretraining"]["ranks"] in (1, 2)
    assert summary["finetuning"]["steps_done"] == 4 and summary["finetuning"]["exported"] == "last"
    assert [h["step"] for h in summary["finetuning"]["validation_history"]] == [0, 2, 4]
    _is_png(out / "before_after.png")
    _is_png(out / "training_curves.png")

    from restore.model import RestorationModel

    model = RestorationModel.from_pretrained(str(out / "model"))
    assert model.tasks == ["sr_x2"]
    assert model(torch.rand(1, 3, 16, 16), task="sr_x2").shape == (1, 3, 32, 32)
    # the card's scores are those of the shipped weights (the same images as the summary: the first one in --quick)
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "model" / "README.md")
    card_psnr = {r.dataset_name: r.metric_value for r in card.data.eval_results if r.metric_type == "psnr"}
    assert card_psnr == {"Set5" if bench == "Set5" else "heldout": pytest.approx(
        scores["fine-tuned (shipped in model/)"]["psnr"], abs=1e-3)}
    # a rerun into the same folder starts clean instead of resuming or refusing
    assert (out / "work" / ".restore-demo").is_file()
