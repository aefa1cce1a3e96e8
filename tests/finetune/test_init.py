"""Where fine-tuning starts: exported folder, raw run / step-N checkpoint, scratch; task fitting; CLI errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from finetune.cli import main
from finetune.init import fit_tasks, load_init
from restore.model import RestorationModel
from tests.finetune.helpers import CORPUS, need
from tests.shared import HAVE_BENCHMARKS


@pytest.mark.slow
def test_raw_step_and_run_dir_load_the_exported_weights(pretrained):
    exported = RestorationModel.from_pretrained(str(pretrained["export"])).state_dict()
    for init in (pretrained["step"], pretrained["run"]):
        got = load_init(str(init))
        assert got.source == "checkpoint"
        state = got.model.state_dict()
        assert state.keys() == exported.keys()
        assert all(torch.equal(state[k], exported[k]) for k in state)


@pytest.mark.slow
def test_new_task_head_on_the_pretrained_body(pretrained):
    ref = RestorationModel.from_pretrained(str(pretrained["export"]))
    got = fit_tasks(load_init(str(pretrained["export"])), ["sr_x3", "sr_x2"])
    model = got.model
    assert got.added_tasks == ["sr_x3"] and sorted(got.dropped_tasks) == ["derain", "sr_x4"]
    assert sorted(model.tasks) == ["sr_x2", "sr_x3"]
    body, ref_body = model.body.state_dict(), ref.body.state_dict()
    assert body.keys() == ref_body.keys() and all(torch.equal(body[k], ref_body[k]) for k in body)
    kept = model.heads["sr_x2"].state_dict()
    assert all(torch.equal(v, ref.heads["sr_x2"].state_dict()[k]) for k, v in kept.items())
    assert model(torch.rand(1, 3, 16, 16), task="sr_x3").shape == (1, 3, 48, 48)


def test_scratch_needs_a_variant():
    with pytest.raises(ValueError, match="--variant"):
        load_init("none")
    model = fit_tasks(load_init("none", variant="edt_tiny", tasks=["derain"]), ["derain"]).model
    assert model.tasks == ["derain"]


@pytest.mark.parametrize("argv, message", [
    (["--task", "sr_x5x"], "unknown task 'sr_x5x'"),
    (["--task", "sr_x2", "--val", "NoSuchBench"], "unknown benchmark 'NoSuchBench'"),
    (["--task", "sr_x2", "--recipe", "nope"], "unknown fine-tuning recipe 'nope'"),
    (["--task", "sr_x2", "stepz=3"], "unknown recipe key 'stepz'"),
])
def test_cli_errors_before_training(argv, message, tmp_path, capsys):
    if "NoSuchBench" in argv and not HAVE_BENCHMARKS:
        pytest.skip("without a benchmark root every name is unknown for another reason (no benchmark folder)")
    out = tmp_path / "run"
    code = main(["--init", "none", "--variant", "edt_tiny", "--train", str(need(CORPUS)), "--out", str(out), *argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # nothing was trained or written


def test_cli_missing_and_unpaired_data(tmp_path, capsys):
    code = main(["--init", "none", "--variant", "edt_tiny", "--task", "sr_x2", "--train", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "run")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    (tmp_path / "pairs" / "rainy").mkdir(parents=True)
    (tmp_path / "pairs" / "norain").mkdir()
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "pairs" / "norain" / "a.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "pairs" / "rainy" / "b.png")
    code = main(["--init", "none", "--variant", "edt_tiny", "--task", "derain", "--train", str(tmp_path / "pairs"),
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "norain/a.png has no partner rainy/a.png" in err and "rainy/b.png has no partner" in err
    assert not (tmp_path / "run").exists()


def test_a_fresh_runs_model_is_the_same_in_every_process():
    """Fresh weights and added heads come from the recipe's seed, not from whatever the torch RNG holds (each
    process, each rank starts elsewhere): two builds with different global RNG states are identical."""
    import torch

    from finetune.recipes import get_recipe
    from finetune.train import FinetuneConfig, _load_init

    cfg = FinetuneConfig(init="none", tasks=["sr_x2", "denoise_g25"], train=["unused"], val=[],
                         recipe=get_recipe("smoke"), out="unused", variant="edt_tiny")
    states = []
    for noise in (1, 2):
        torch.manual_seed(noise)  # another process's starting point
        states.append(_load_init(cfg).model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize("launcher,removed", [
    ({}, True),  # a plain process: rank 0 of 1, which cleans up the failed fresh run
    ({"SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8",
      "SLURM_LOCALID": "3", "SLURM_LAUNCH_NODE_IPADDR": "10.0.0.7"}, False),  # srun's rank 3 leaves it to rank 0
])
def test_only_rank_zero_cleans_up_a_failed_fresh_run(tmp_path, monkeypatch, launcher, removed):
    """Under srun (no --local_rank, RANK unset) every task took itself for rank 0 in the clean-up guard, so a rank
    failing early could delete the folder rank 0 was writing. The training itself is replaced by a failure: what
    is checked is who removes the folder."""
    import os

    import finetune.train as ft
    from finetune.recipes import get_recipe

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(k, "")  # recorded, so that what run_finetune sets is undone after the test
        monkeypatch.delenv(k)
    for k, v in launcher.items():
        monkeypatch.setenv(k, v)
    train = tmp_path / "train"
    train.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(train / "a.png")

    def fails(_cfg, _recipe, _init, _info, out, *_args):
        out.mkdir(parents=True, exist_ok=True)
        (out / "log.jsonl").write_text("")  # what a run writes before its first checkpoint
        raise RuntimeError("a rank failed before its first checkpoint")

    monkeypatch.setattr(ft, "_train", fails)
    cfg = ft.FinetuneConfig(init="none", tasks=["sr_x2"], train=[str(train)], val=[], recipe=get_recipe("smoke"),
                            out=str(tmp_path / "run"), variant="edt_tiny")
    with pytest.raises(RuntimeError, match="before its first checkpoint"):
        ft.run_finetune(cfg)
    assert os.environ["RANK"] == ("3" if launcher else "0")
    assert (tmp_path / "run").exists() is not removed
