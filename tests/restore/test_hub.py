"""Hub I/O: save/load round trip, strict keys, refused pickles, model card, push/pull through a local fake Hub."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from restore import RestorationModel


def test_round_trip_bit_identical(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["variant"] == "edt_tiny" and cfg["tasks"] == ["sr_x2", "denoise_g25"] and cfg["format_version"] == 1
    loaded = RestorationModel.from_pretrained(tmp_path / "m")
    x = torch.rand(1, 3, 30, 26)
    with torch.no_grad():
        for task in tiny_model.tasks:
            assert torch.equal(loaded(x, task), tiny_model(x, task))
    assert not loaded.training


def test_load_subset_of_tasks(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    m = RestorationModel.from_pretrained(tmp_path, tasks=["denoise_g25"])
    assert m.tasks == ["denoise_g25"]
    with pytest.raises(ValueError, match="sr_x4"):
        RestorationModel.from_pretrained(tmp_path, tasks=["sr_x4"])


def test_wrong_and_missing_keys_are_named(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(weights)
    state["heads.sr_x2.blocks.0.bogus"] = state.pop("heads.sr_x2.blocks.0.weight")
    save_file(state, weights)
    with pytest.raises(ValueError) as err:
        RestorationModel.from_pretrained(tmp_path)
    assert "heads.sr_x2.blocks.0.weight" in str(err.value) and "heads.sr_x2.blocks.0.bogus" in str(err.value)
    del state["heads.sr_x2.blocks.0.bogus"]
    save_file(state, weights)
    with pytest.raises(ValueError, match=r"missing keys: heads\.sr_x2\.blocks\.0\.weight"):
        RestorationModel.from_pretrained(tmp_path)


def test_pickles_are_refused(tiny_model, tmp_path):
    torch.save(tiny_model.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(tiny_model.config_dict()))
    with pytest.raises(ValueError, match="restore convert"):
        RestorationModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="pickled"):
        RestorationModel.from_pretrained(tmp_path / "pytorch_model.bin")


def test_not_a_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        RestorationModel.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither"):
        RestorationModel.from_pretrained(str(tmp_path / "no" / "such" / "dir"))


def test_card_and_atomic_save(tiny_model, tmp_path):
    from huggingface_hub import EvalResult, ModelCard

    ev = [EvalResult(task_type="image-to-image", task_name="SR x2", dataset_type="set5", dataset_name="Set5",
                     dataset_split="test", metric_type="psnr", metric_name="PSNR (Y)", metric_value=30.12)]
    (tmp_path / "README.md").write_text("stale card")
    tiny_model.save_pretrained(tmp_path, model_card_kwargs={"model_name": "tiny-test", "eval_results": ev})
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "restore"
    assert card.data.eval_results[0].metric_value == pytest.approx(30.12)
    assert "tiny-test" in card.text and "sr_x2" in card.text and "30.12" in card.text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".restore-save-")]


SAVE_AND_PUSH = textwrap.dedent(
    """
    import json, sys, torch, restore
    torch.manual_seed(0)
    model = restore.create_model("edt_tiny", tasks=["sr_x2"]).eval()
    model.save_pretrained(sys.argv[1] + "/local", push_to_hub=True, repo_id="acme/saved-and-pushed")
    """
)


def test_save_pretrained_push_to_hub(fake_hub, hub_env, tmp_path):
    """``save_pretrained(..., push_to_hub=True)`` saves the folder and pushes the same files to ``repo_id`` (the
    mixin alone, saving into our temporary folder, named the repo after that folder)."""
    r = subprocess.run([sys.executable, "-c", SAVE_AND_PUSH, str(tmp_path)], env=hub_env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    local = tmp_path / "local"
    assert sorted(p.name for p in local.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    repo = fake_hub.repos["models/acme/saved-and-pushed"]
    pushed = repo.commits[repo.refs["main"]]
    assert pushed["model.safetensors"] == (local / "model.safetensors").read_bytes()
    assert json.loads(pushed["config.json"]) == json.loads((local / "config.json").read_text())
    assert not any(k.startswith("models/.restore-save-") for k in fake_hub.repos)


def test_failed_push_keeps_the_local_save(tiny_model, tmp_path):
    with pytest.raises(Exception, match="bad id"):
        tiny_model.save_pretrained(tmp_path / "m", push_to_hub=True, repo_id="bad id!")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert RestorationModel.from_pretrained(tmp_path / "m").tasks == tiny_model.tasks


PUSH_PULL = textwrap.dedent(
    """
    import json, sys, torch, restore
    from huggingface_hub import HfApi
    torch.manual_seed(0)
    first = restore.create_model("edt_tiny", tasks=["sr_x2"]).eval()
    first.push_to_hub("acme/tiny-restore")
    api = HfApi()
    api.create_tag("acme/tiny-restore", tag="v1.0")
    sha1 = api.model_info("acme/tiny-restore", revision="v1.0").sha
    torch.manual_seed(1)
    second = restore.create_model("edt_tiny", tasks=["sr_x2"]).eval()
    second.push_to_hub("acme/tiny-restore", commit_message="retrained")
    x = torch.rand(1, 3, 24, 24)
    out = {}
    with torch.no_grad():
        for rev, ref in ((None, second), ("v1.0", first), (sha1, first)):
            m = restore.RestorationModel.from_pretrained("acme/tiny-restore", revision=rev)
            out[str(rev)] = torch.equal(m(x, "sr_x2"), ref(x, "sr_x2"))
    torch.save(x, sys.argv[1] + "/x.pt")
    torch.save(first(x, "sr_x2").detach(), sys.argv[1] + "/y.pt")
    print(json.dumps(out))
    """
)

OFFLINE = textwrap.dedent(
    """
    import sys, torch, restore
    x = torch.load(sys.argv[1] + "/x.pt"); y = torch.load(sys.argv[1] + "/y.pt")
    m = restore.RestorationModel.from_pretrained("acme/tiny-restore", revision="v1.0")
    with torch.no_grad():
        assert torch.equal(m(x, "sr_x2"), y)
    print("offline ok")
    """
)


@pytest.mark.slow
def test_push_pull_revision_and_offline(fake_hub, hub_env, tmp_path):
    r = subprocess.run([sys.executable, "-c", PUSH_PULL, str(tmp_path)], env=hub_env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert list(result.values()) == [True, True, True], result
    assert ("POST", "/api/models/acme/tiny-restore/tag/main") in fake_hub.requests
    fake_hub.stop()  # the Hub is gone: the cache alone must serve the pinned tag
    env = dict(hub_env, HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", OFFLINE, str(tmp_path)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "offline ok" in r.stdout, r.stderr[-3000:]


LFS_PUSH = textwrap.dedent(
    """
    import json, sys, torch, restore
    from pathlib import Path
    from huggingface_hub import hf_hub_download
    torch.manual_seed(0)
    model = restore.create_model("edt_tiny", tasks=["sr_x2"]).eval()
    model.save_pretrained(sys.argv[1] + "/local")
    model.push_to_hub("acme/lfs-restore")
    pulled = Path(hf_hub_download("acme/lfs-restore", "model.safetensors"))
    local = Path(sys.argv[1] + "/local/model.safetensors")
    back = restore.RestorationModel.from_pretrained("acme/lfs-restore")
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        same = torch.equal(back(x, "sr_x2"), model(x, "sr_x2"))
    print(json.dumps({"bytes": pulled.read_bytes() == local.read_bytes(), "outputs": same}))
    """
)


def test_push_through_lfs_and_download_byte_identical(hub_env, tmp_path):
    """The weights go the way large files go on the real Hub: preupload "lfs", the LFS batch API, PUT, verify,
    and an lfsFile commit entry; the download is byte-identical."""
    from tests.fakehub import FakeHub

    with FakeHub(lfs_threshold=4096) as hub:  # config.json and README.md stay regular, the weights go LFS
        env = dict(hub_env, HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1")  # FakeHub speaks LFS, not Xet
        r = subprocess.run([sys.executable, "-c", LFS_PUSH, str(tmp_path)], env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert json.loads(r.stdout.strip().splitlines()[-1]) == {"bytes": True, "outputs": True}
        calls = {(m, p.split("/")[1] if p.startswith("/lfs-upload/") else p) for m, p in hub.requests}
        assert {("POST", "/acme/lfs-restore.git/info/lfs/objects/batch"), ("PUT", "lfs-upload"),
                ("POST", "/lfs-verify")} <= calls
        weights = (tmp_path / "local" / "model.safetensors").read_bytes()
        assert list(hub.lfs_objects.values()) == [weights]
        sha = hub.repos["models/acme/lfs-restore"].refs["main"]
        assert hub.repos["models/acme/lfs-restore"].lfs[sha] == {"model.safetensors"}


UNREACHABLE = textwrap.dedent(
    """
    import sys, torch, restore
    x = torch.load(sys.argv[1] + "/x.pt"); y = torch.load(sys.argv[1] + "/y.pt")
    m = restore.RestorationModel.from_pretrained("acme/tiny-restore")  # cached by the first run
    with torch.no_grad():
        assert torch.equal(m(x, "sr_x2"), y)
    try:
        restore.RestorationModel.from_pretrained("acme/never-downloaded")
    except FileNotFoundError as err:
        print("uncached:", err)
    """
)

PUSH_AND_LOAD = textwrap.dedent(
    """
    import sys, torch, restore
    torch.manual_seed(0)
    model = restore.create_model("edt_tiny", tasks=["sr_x2"]).eval()
    model.push_to_hub("acme/tiny-restore")
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        y = restore.RestorationModel.from_pretrained("acme/tiny-restore")(x, "sr_x2")
    torch.save(x, sys.argv[1] + "/x.pt"); torch.save(y, sys.argv[1] + "/y.pt")
    """
)


def test_unreachable_hub_loads_from_the_cache_without_retrying(fake_hub, hub_env, tmp_path):
    """The Hub gone and HF_HUB_OFFLINE unset: the probe sends the cached model straight to the cache, with a
    warning naming the endpoint, and an uncached one straight to the offline error, with no backoff retries."""
    r = subprocess.run([sys.executable, "-c", PUSH_AND_LOAD, str(tmp_path)], env=hub_env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    url = fake_hub.url
    fake_hub.stop()
    r = subprocess.run([sys.executable, "-W", "always", "-c", UNREACHABLE, str(tmp_path)], env=hub_env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"the Hub at {url} is unreachable" in r.stderr and "local Hub cache" in r.stderr
    assert "Retrying" not in r.stderr  # huggingface_hub's backoff never ran
    assert "uncached: config.json of Hub repo 'acme/never-downloaded'" in r.stdout


def test_hub_probe_names_the_failure_and_steps_aside_for_proxies(fake_hub, monkeypatch):
    from restore.hub import _hub_unreachable

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    url = fake_hub.url
    assert _hub_unreachable(url) is None  # listening
    fake_hub.stop()
    assert "refused" in _hub_unreachable(url).lower()
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # only the client, through the proxy, can tell
    assert _hub_unreachable(url) is None
