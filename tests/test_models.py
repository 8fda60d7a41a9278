"""The model factory: every kind of spec, the offline error, unknown specs, devices, safe loading."""

import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import open_clip
import open_clip.factory
import open_clip.pretrained
import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from PIL import Image
from safetensors.torch import save_file

from mbm.data.shapes import make_scene, render
from mbm.errors import InputError
from mbm.models import (
    WeightsFileError,
    WeightsUnavailableError,
    create_model,
    default_model,
    list_models,
    resolve_device,
    resolve_precision,
)
from mbm.models._registry import EMBEDDED
from mbm.train.clip import TrainConfig, default_model_cfg, save, train

ROOT = Path(__file__).resolve().parents[1]

TINY = {  # a tiny open_clip ViT: builds in milliseconds, never downloads
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture
def tiny_arch(tmp_path, monkeypatch):
    """Register a tiny architecture from a JSON file in a temp dir, with one pretrained tag on a fake hub repo."""
    monkeypatch.setattr(open_clip.factory, "_MODEL_CONFIG_PATHS", list(open_clip.factory._MODEL_CONFIG_PATHS))
    monkeypatch.setattr(open_clip.factory, "_MODEL_CONFIGS", dict(open_clip.factory._MODEL_CONFIGS))
    path = tmp_path / "mbm-tiny-test.json"
    path.write_text(json.dumps(TINY))
    open_clip.add_model_config(path)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "mbm-tiny-test",
                        {"tiny": open_clip.pretrained._pcfg(hf_hub="mbm-test/tiny/")})
    return "mbm-tiny-test"


def _tiny_weights(folder):
    torch.manual_seed(1)
    model = open_clip.create_model("mbm-tiny-test")
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return model, folder / "open_clip_model.safetensors"


def test_list_models_names_the_embedded_model_first():
    assert list_models()[0] == EMBEDDED
    assert "ViT-B-32:laion2b_s34b_b79k" in list_models()


@pytest.mark.parametrize("spec, choices", [
    ("nonsense", EMBEDDED), ("", EMBEDDED), ("ViT-B-99:laion", EMBEDDED),
    ("ViT-B-32:no-such-tag", "laion2b_s34b_b79k"),  # a known architecture lists its own tags
])
def test_unknown_spec_is_a_value_error_listing_choices(spec, choices):
    with pytest.raises(ValueError, match=f"unknown model {spec!r}.*{choices}"):
        create_model(spec, device="cpu")


def test_embedded_model_encodes_unit_rows(shapes_model):
    m = shapes_model
    assert (m.name, m.embed_dim, m.device.type, m.precision) == ("mbm-shapes", 128, "cpu", "fp32")
    assert 1 < m.logit_scale <= 100
    images = [render(make_scene("test", i), 64) for i in range(3)] + [Image.new("L", (40, 90), 128)]
    img = m.encode_images(images, batch_size=2)
    txt = m.encode_texts(["a red circle", "a blue star", "x"])
    assert img.shape == (4, 128) and txt.shape == (3, 128)
    assert img.dtype == txt.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)
    assert m.encode_texts([]).shape == (0, 128)


def test_device_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto").type == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cpu").type == "cpu"


def test_a_cuda_device_torch_cannot_see_is_refused_with_what_to_use(monkeypatch):
    """For every command and `create_model`, not only training: torch's own error would come at the first tensor."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(InputError, match="no CUDA device.*--device cpu"):
            resolve_device(spec)
    with pytest.raises(InputError, match="no CUDA device"):
        create_model("mbm-shapes", device="cuda")


def test_half_precision_only_on_cuda():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        create_model("mbm-shapes", device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="choose from"):
        resolve_precision("fp8", torch.device("cpu"))


def test_open_clip_tag_offline_gives_one_clear_error(tiny_arch, monkeypatch):
    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("no network and no cache")
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", offline)
    with pytest.raises(WeightsUnavailableError) as err:
        create_model("mbm-tiny-test:tiny", device="cpu")
    message = str(err.value)
    assert "mbm-tiny-test:tiny" in message and "not in the local cache" in message
    assert "hub is unreachable" in message and EMBEDDED in message


def test_open_clip_tag_loads_the_downloaded_weights(tiny_arch, monkeypatch, tmp_path):
    reference, weights = _tiny_weights(tmp_path / "hub")
    asked = []
    monkeypatch.setattr("mbm.models._factory.hub_reachable", lambda url=None, timeout=1.0: True)

    def download(repo_id, filename, **kwargs):
        asked.append((repo_id, filename))
        return str(weights)
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", download)
    enc = create_model("mbm-tiny-test:tiny", device="cpu")
    assert asked[0] == ("mbm-test/tiny", "open_clip_model.safetensors")
    assert enc.embed_dim == 16 and enc.context_length == 16
    for k, v in reference.state_dict().items():
        torch.testing.assert_close(enc.model.state_dict()[k], v)


def test_arch_with_a_local_weights_file(tiny_arch, tmp_path):
    reference, weights = _tiny_weights(tmp_path)
    pt = tmp_path / "epoch_3.pt"  # open_clip's training checkpoints are dicts holding a state_dict
    torch.save({"epoch": 3, "state_dict": reference.state_dict()}, pt)
    for path in (weights, pt):
        enc = create_model(f"mbm-tiny-test:{path}", device="cpu")
        torch.testing.assert_close(enc.model.visual.conv1.weight, reference.visual.conv1.weight)


def test_models_skip_random_init_yet_hold_what_the_plain_load_gives(tiny_arch, tmp_path, monkeypatch):
    import mbm.models._factory as factory
    reference, weights = _tiny_weights(tmp_path)
    pt = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "state_dict": reference.state_dict()}, pt)
    built, real = [], factory.without_init
    monkeypatch.setattr(factory, "without_init", lambda *a: built.append(real(*a)) or built[-1])
    texts = ["a red circle", "Fuchs", "キツネ"]
    for spec in ("mbm-world", "mbm-shapes", f"mbm-tiny-test:{weights}", f"mbm-tiny-test:{pt}"):
        fast = create_model(spec, device="cpu")
        assert built.pop() is not None, spec  # built on the meta device, weights assigned
        with monkeypatch.context() as m:
            m.setattr(factory, "without_init", lambda *a: None)
            plain = create_model(spec, device="cpu")
        a, b = fast.model.state_dict(), plain.model.state_dict()
        assert a.keys() == b.keys() and fast.key == plain.key
        for k in a:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), (spec, k)
        for (n, x), (_, y) in zip(fast.model.named_buffers(), plain.model.named_buffers()):
            assert not x.is_meta and torch.equal(x, y), (spec, n)  # the causal mask too
        np.testing.assert_array_equal(fast.encode_texts(texts), plain.encode_texts(texts))


class _Payload:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickled_payload_is_refused(tiny_arch, tmp_path):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": _Payload()}))
    with pytest.raises(WeightsFileError, match=f"refused to load {evil}: it holds Python objects.*Weights only load"):
        create_model(f"mbm-tiny-test:{evil}", device="cpu")


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory):
    cfg = TrainConfig(steps=2, batch_size=8, model_cfg=default_model_cfg())
    model, _ = train(cfg)
    return model, save(model, cfg, tmp_path_factory.mktemp("mine") / "my-model")


def test_local_folder_and_file_load_what_was_trained(trained_folder):
    model, folder = trained_folder
    images = [render(make_scene("val", i), 64) for i in range(4)]
    for spec in (str(folder), str(folder / "open_clip_model.safetensors")):
        enc = create_model(spec, device="cpu")
        assert enc.name == spec and enc.embed_dim == 128
        with torch.no_grad():
            x = torch.stack([enc.preprocess(im) for im in images])
            expected = torch.nn.functional.normalize(model.encode_image(x), dim=-1).numpy()
        np.testing.assert_allclose(enc.encode_images(images), expected, atol=5e-3)  # fp16 storage


def test_local_paths_without_config_say_what_is_missing(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="open_clip_config.json"):  # a person's mistake: the CLI exits 2
        create_model(str(tmp_path), device="cpu")
    with pytest.raises(InputError, match="open_clip_config.json"):
        create_model(str(tmp_path / "w.safetensors"), device="cpu")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="not a weights file"):
        create_model(str(tmp_path / "notes.txt"), device="cpu")


def _fake_hf_cache(cache: Path, repo_id: str, filename: str) -> None:
    """The layout huggingface_hub writes: models--ORG--NAME/{refs/main, snapshots/REV/FILE}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / filename).write_bytes(b"weights")


def test_default_model_prefers_cached_open_clip_weights_then_the_embedded_model(tmp_path):
    from mbm.models import default_model, is_cached
    assert default_model(on_space=False, cache_dir=str(tmp_path)) == EMBEDDED
    _fake_hf_cache(tmp_path, "apple/MobileCLIP-S1-OpenCLIP", "open_clip_model.safetensors")
    assert is_cached("MobileCLIP-S1:datacompdr", str(tmp_path))
    assert not is_cached("ViT-B-32:laion2b_s34b_b79k", str(tmp_path))
    assert default_model(on_space=False, cache_dir=str(tmp_path)) == "MobileCLIP-S1:datacompdr"
    assert default_model(on_space=True, cache_dir=str(tmp_path)) == "ViT-B-32:laion2b_s34b_b79k"


def test_a_space_that_cannot_download_its_default_falls_back_and_says_so(tmp_path):
    from mbm.engine import Engine, EngineConfig
    config = EngineConfig.from_env({"SPACE_ID": "someone/mbm", "MBM_CACHE": str(tmp_path)}, device="cpu")
    assert config.on_space and config.model is None
    engine = Engine(config)
    assert engine.encoder.name == EMBEDDED and config.model == EMBEDDED
    assert "ViT-B-32:laion2b_s34b_b79k could not be loaded here" in engine.notice


def test_an_open_clip_tag_loads_offline_from_a_real_hugging_face_cache(tmp_path):
    """ViT-B-32:laion2b_s34b_b79k with random weights, laid out as huggingface_hub caches a download (blobs, a
    snapshot linking to them, refs/main), loaded with HF_HUB_OFFLINE=1 in a fresh process: nothing is patched."""
    from open_clip.pretrained import get_pretrained_cfg
    repo = get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")["hf_hub"].strip("/")
    hub = tmp_path / "hf" / "hub" / f"models--{repo.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    torch.manual_seed(7)
    model = open_clip.create_model("ViT-B-32")
    (hub / "blobs").mkdir(parents=True)
    blob = hub / "blobs" / "c0ffee"
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(blob))
    (hub / "snapshots" / revision).mkdir(parents=True)
    (hub / "snapshots" / revision / "open_clip_model.safetensors").symlink_to(blob)
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text(revision)
    code = """
import json, sys, torch
from mbm.models import create_model, default_model, is_cached
enc = create_model("ViT-B-32:laion2b_s34b_b79k", device="cpu")
torch.manual_seed(7)
import open_clip
want = open_clip.create_model("ViT-B-32").state_dict()
got = enc.model.state_dict()
print(json.dumps({"dim": enc.embed_dim, "cached": is_cached("ViT-B-32:laion2b_s34b_b79k"),
                  "default": default_model(False), "differ": max(float((got[k].float() - want[k].half().float())
                  .abs().max()) for k in want), "emb": enc.encode_texts(["a red circle"]).shape[1]}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["dim"] == got["emb"] == 512 and got["cached"] and got["default"] == "ViT-B-32:laion2b_s34b_b79k"
    assert got["differ"] == 0.0  # exactly the weights in the cache


def _unreachable_hub(tmp_path) -> dict:
    """A process environment whose hub endpoint is a closed port on loopback, with no offline flag: what a machine
    without a network looks like to huggingface_hub, which would retry it for about a minute."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: connections are refused
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return env | {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": f"http://127.0.0.1:{port}"}


def test_an_uncached_model_is_refused_at_once_when_the_hub_is_unreachable(tmp_path):
    code = """
import json
from mbm.models import WeightsUnavailableError, create_model
out = {}
for spec in ("ViT-B-32:laion2b_s34b_b79k", "hf-hub:someone/nothing-cached"):
    try:
        create_model(spec, device="cpu")
    except WeightsUnavailableError as e:
        out[spec] = str(e)
print(json.dumps(out))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=_unreachable_hub(tmp_path))
    assert out.returncode == 0, out.stderr
    refused = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(refused) == {"ViT-B-32:laion2b_s34b_b79k", "hf-hub:someone/nothing-cached"}
    assert all("not in the local cache" in m and EMBEDDED in m for m in refused.values())
    assert "Retrying" not in out.stderr  # huggingface_hub was never asked to reach the hub


def test_a_cached_hub_repo_loads_when_the_hub_is_unreachable(tmp_path):
    """hf-hub:ORG/REPO in a real cache layout (config and weights in a snapshot), no offline flag set, the hub
    refusing connections: the model loads from the cache, as it would on a laptop on a train."""
    from mbm.train.clip import default_model_cfg
    snapshot = tmp_path / "hf" / "hub" / "models--someone--tiny-clip" / "snapshots" / ("ab" * 20)
    snapshot.mkdir(parents=True)
    cfg = default_model_cfg()
    (snapshot / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    torch.manual_seed(3)
    model = open_clip.CLIP(**cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(snapshot / "open_clip_model.safetensors"))
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("ab" * 20)
    tokens = open_clip.SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])(["a red circle"])
    want = model.encode_text(tokens, normalize=True)[0]
    code = """
import json
from mbm.models import create_model
enc = create_model("hf-hub:someone/tiny-clip", device="cpu")
print(json.dumps(enc.encode_texts(["a red circle"])[0].tolist()))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=_unreachable_hub(tmp_path))
    assert out.returncode == 0, out.stderr
    got = torch.tensor(json.loads(out.stdout.strip().splitlines()[-1]))
    assert torch.allclose(got, want.detach(), atol=1e-5)


def test_the_tests_hugging_face_cache_is_their_own():
    assert os.environ["HF_HOME"].startswith(tempfile.gettempdir()) and "mbm-test-hf-home-" in os.environ["HF_HOME"]
    assert default_model(False) == EMBEDDED  # whatever this machine has cached


def test_an_embedded_model_names_the_words_it_never_read(shapes_model):
    """mbm-shapes read 51 tokens in training; 'dog' is none of them, so its vector is the random one it started
    with and a page must not pass off its answers as knowledge."""
    assert shapes_model.unseen_words("a red circle at the top left") == []
    assert shapes_model.unseen_words("a dog, a DOG and a red quokka") == ["dog", "DOG", "quokka"]
    assert shapes_model.unseen_words("キツネ") == ["キツネ"]
    note = shapes_model.scope.note("mbm-shapes", ["dog"])
    assert note.startswith("mbm-shapes never read 'dog' in training") and "English only" in note


def test_a_model_without_a_scope_flags_nothing_and_a_damaged_scope_is_ignored(trained_folder, tmp_path):
    import shutil

    from mbm.models.scope import SCOPE_FILE
    _, folder = trained_folder
    assert (folder / SCOPE_FILE).is_file()  # train-clip writes it beside the weights
    assert create_model(str(folder), device="cpu").unseen_words("a dog") == ["dog"]
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / SCOPE_FILE).write_text("{not json")
    assert create_model(str(copy), device="cpu").unseen_words("a dog") == []  # as for a pretrained model
    (copy / SCOPE_FILE).unlink()
    assert create_model(str(copy), device="cpu").scope is None
