"""End-to-end fine-tuning on CPU with the real engine, loop, checkpoints, exports and Hub client (tiny EDT)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from finetune.cli import main
from restore.model import RestorationModel
from tests.finetune.helpers import BENCHMARKS, CORPUS, need
from tests.shared import needs_benchmarks

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _card(folder: Path):
    from huggingface_hub import ModelCard

    return ModelCard.load(folder / "README.md")


def _scores(card) -> dict[tuple[str, str], float]:
    return {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}


@needs_benchmarks
def test_sr_x2_from_smoke_export_raises_set5_psnr(pretrained, tmp_path):
    out = tmp_path / "ft"
    code = main(["--init", str(pretrained["export"]), "--task", "sr_x2", "--train", str(need(CORPUS)),
                 "--val", "Set5", "--recipe", "smoke", "--out", str(out), "--base-model", "acme/restore-smoke",
                 "steps=30", "val_every=15", "log_every=15", "ckpt_every=30"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    curve = [(h["step"], h["sr_x2/Set5/psnr"]) for h in summary["history"]]
    print("Set5 x2 PSNR curve:", curve)
    assert [s for s, _ in curve] == [0, 15, 30]
    assert curve[-1][1] > curve[0][1] + 0.05, f"fine-tuning did not raise Set5 PSNR: {curve}"

    best, last = _card(out / "best"), _card(out / "last")
    top = max(curve, key=lambda c: c[1])
    assert summary["best"]["step"] == top[0]
    assert _scores(best)[("Set5", "psnr")] == pytest.approx(top[1], abs=1e-3)
    assert _scores(last)[("Set5", "psnr")] == pytest.approx(curve[-1][1], abs=1e-3)
    assert best.data.base_model == last.data.base_model == "acme/restore-smoke"
    assert best.data.model_name == "restore-edt_tiny-sr_x2" and best.data.datasets == ["imagenet-sample"]
    # a second fresh run into the same folder is refused before training (it would mix two runs' checkpoints)
    assert main(["--init", str(pretrained["export"]), "--task", "sr_x2", "--train", str(CORPUS), "--recipe", "smoke",
                 "--out", str(out)]) == 2
    # the exports reload and score what the card says
    import tasks

    model = RestorationModel.from_pretrained(str(out / "last"))
    assert model.tasks == ["sr_x2"]
    assert tasks.evaluate(model, "Set5", "sr_x2").psnr == pytest.approx(curve[-1][1], abs=1e-3)
    from PIL import Image

    with Image.open(out / "best" / "comparison.png") as im:
        assert im.width == 3 * 128 + 2 * 4 and im.height > 128


def _rain_split(tmp_path: Path, n_train: int, n_val: int) -> tuple[Path, Path]:
    src = need(BENCHMARKS / "Rain100H")
    names = sorted(p.name for p in (src / "norain").glob("*.png"))
    split = {"train": names[:n_train], "val": names[n_train : n_train + n_val]}
    for part, chosen in split.items():
        for sub in ("rainy", "norain"):
            (tmp_path / part / sub).mkdir(parents=True)
            for name in chosen:
                (tmp_path / part / sub / name).symlink_to(src / sub / name)
    return tmp_path / "train", tmp_path / "val"


def test_paired_derain_end_to_end_and_resume(pretrained, tmp_path):
    train, val = _rain_split(tmp_path, 12, 2)
    out = tmp_path / "ft"
    args = ["--init", str(pretrained["step"]), "--task", "derain", "--train", str(train), "--val", str(val),
            "--recipe", "smoke", "--out", str(out), "dn_patch=32", "batch_size=2", "steps=6", "val_every=3",
            "ckpt_every=3", "keep_last=2", "log_every=3"]
    from finetune.train import FinetuneConfig, run_finetune
    from finetune.recipes import get_recipe

    cfg = FinetuneConfig(init=str(pretrained["step"]), tasks=["derain"], train=[str(train)], val=[str(val)],
                         recipe=get_recipe("smoke", args[args.index("dn_patch=32"):]), out=out, stop_after=3)
    first = run_finetune(cfg)  # "killed" after 3 of 6 steps
    assert first.step == 3 and [h["step"] for h in first.history] == [0, 3]
    assert main([*args, "--resume", "auto"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 6 and [h["step"] for h in summary["history"]] == [0, 3, 6]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r.get("event") == "train" and "loss" in r] == [3, 6]  # no step trained twice
    card = _card(out / "last")
    assert _scores(card)[("val", "psnr")] == pytest.approx(summary["history"][-1]["derain/val/psnr"], abs=1e-3)
    assert RestorationModel.from_pretrained(str(out / "best")).tasks == ["derain"]
    assert (out / "best" / "comparison.png").is_file()


def test_new_task_trains_and_exports(pretrained, tmp_path):
    out = tmp_path / "ft"
    assert main(["--init", str(pretrained["export"]), "--task", "sr_x3", "--train", str(need(CORPUS)),
                 "--recipe", "smoke", "--out", str(out), "lr_patch=8", "steps=3", "log_every=1"]) == 0
    model = RestorationModel.from_pretrained(str(out / "last"))
    ref = RestorationModel.from_pretrained(str(pretrained["export"]))
    assert model.tasks == ["sr_x3"]
    # the body moved away from the pretrained one (it trained), starting from it
    diffs = [float((a - ref.body.state_dict()[k]).abs().max()) for k, a in model.body.state_dict().items()]
    assert 0 < max(diffs) < 0.1
    assert "new head and tail: sr_x3" in (out / "last" / "README.md").read_text()


PUSH_SCRIPT = textwrap.dedent("""
    import sys, json
    from finetune.export import push_folder
    from finetune.cli import main
    export, out, train, val = sys.argv[1:5]
    push_folder(export, "acme/smoke-pretrain")
    code = main(["--init", "acme/smoke-pretrain", "--task", "sr_x2", "--train", train, "--val", val,
                 "--recipe", "smoke", "--out", out, "--push-to-hub", "acme/smoke-sr-x2",
                 "--revision", "v1.0", "lr_patch=8", "steps=2", "val_every=2"])
    assert code == 0, code
    from huggingface_hub import ModelCard, hf_hub_download
    from restore.model import RestorationModel
    model = RestorationModel.from_pretrained("acme/smoke-sr-x2", revision="v1.0")
    card = ModelCard.load(hf_hub_download("acme/smoke-sr-x2", "README.md", revision="v1.0"))
    print(json.dumps({"tasks": model.tasks, "base_model": card.data.base_model,
                      "psnr": card.data.eval_results[0].metric_value,
                      "usage": "acme/smoke-sr-x2" in card.text}))
""")


def test_push_to_hub_with_tag(pretrained, hub_env, fake_hub, tmp_path):
    from PIL import Image

    val = tmp_path / "val" / "HR"
    val.mkdir(parents=True)
    with Image.open(need(BENCHMARKS / "Set5" / "HR" / "butterfly.png")) as im:
        im.crop((96, 96, 160, 160)).save(val / "butterfly.png")  # a 64 px benchmark: validation in a blink
    hub_env.update(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        hub_env.pop(k, None)
    proc = subprocess.run(
        [sys.executable, "-c", PUSH_SCRIPT, str(pretrained["export"]), str(tmp_path / "ft"), str(need(CORPUS)),
         str(val.parent)],
        cwd=REPO, env=hub_env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    best = json.loads((tmp_path / "ft" / "best" / "finetune.json").read_text())
    assert got["tasks"] == ["sr_x2"] and got["base_model"] == "acme/smoke-pretrain" and got["usage"]
    assert got["psnr"] == pytest.approx(best["metrics"]["sr_x2/val/psnr"], abs=1e-3)
