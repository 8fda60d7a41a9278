"""A query process without torch (issue 19): open_clip's tokenizer re-read without torch, the text graph's
query.json, `Gallery.up_to_date`, and `python -m mbm search` with MBM_BACKEND=onnx answering with torch made
unimportable, the same files in the same order as the full engine, falling back to it whenever it must."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
from conftest import ROOT
from PIL import Image

from mbm.models import create_model
from mbm.models._bpe import ClipBPE
from mbm.models._query import find_query_encoder
from mbm.models._registry import ASSETS, KNOWN_MODELS, WORLD

TEXTS = ["a red circle", "Fuchs", "renard", "キツネ", "лиса", "狐狸", "लोमड़ी", "ثعلب", "&amp;lt;b&gt; «quoted» HTML",
         "  lots   of\tspace\n", "ﬁ ligature café Straße", "🦊 fox 👍🏽 thumbs", "a" * 300, "x " * 100, "", "!!!",
         "'s 're I'll WE'VE", "ÜNÏCÖDÉ àéî", "٣ and ١٢ and 12345", "mixed 日本語 text, numbers 3.14 and e-mail@x.org"]


def test_the_tokenizer_without_torch_gives_open_clips_ids_in_every_script():
    for length in (48, 77):
        ours, theirs = ClipBPE(length), open_clip.SimpleTokenizer(context_length=length)
        np.testing.assert_array_equal(ours(TEXTS), theirs(TEXTS).numpy())  # truncation and padding included
        for text in TEXTS:
            assert ours.encode(text) == theirs.encode(text), text


def test_known_models_name_the_hub_files_open_clip_would_read():
    from open_clip.pretrained import get_pretrained_cfg
    for m in KNOWN_MODELS:
        arch, _, tag = m.spec.partition(":")
        assert m.hub == ("" if m.offline else get_pretrained_cfg(arch, tag)["hf_hub"]), m.spec


def _gallery(folder: Path) -> Path:
    """A folder of real files: the built-in photos and 40 scenes of shapes with their caption files."""
    folder.mkdir()
    for p in sorted((ASSETS / "gallery" / "photos").glob("*.jpg")):
        shutil.copy(p, folder)
    for p in sorted((ASSETS / "gallery" / "anywhere").glob("scene-0[0-3]?.*")):
        shutil.copy(p, folder)
    return folder


def _mbm(*args: str, env: dict, poison: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m mbm ARGS`; with `poison`, `import torch` (and so open_clip) raises in that process."""
    path = os.pathsep.join([str(poison)] * bool(poison) + [str(ROOT)])
    return subprocess.run([sys.executable, "-m", "mbm", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path, **env})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("query")
    poison = base / "poison" / "torch"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('torch was imported by a query that needs none')\n")
    folder, cache = _gallery(base / "photos"), base / "cache"
    onnx = {"MBM_BACKEND": "onnx", "MBM_CACHE": str(cache)}
    done = _mbm("index", str(folder), env=onnx)  # exports the graphs and writes query.json
    assert done.returncode == 0, done.stderr
    return folder, cache, onnx, poison.parent


def _search(query: str, folder: Path, env: dict, poison: Path | None = None, k: int = 5) -> list[dict]:
    done = _mbm("search", query, "--gallery", str(folder), "-k", str(k), "--json", env=env, poison=poison)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_text_search_answers_without_torch_as_the_full_engine_does(setup):
    folder, cache, onnx, poison = setup
    assert list(cache.glob("onnx/*/query.json")), "the onnx backend wrote no query.json"
    for query in ("a red circle", "a large green cross", "a blue star + 0.5 x a cat", "キツネ"):
        quick = _search(query, folder, onnx, poison=poison)
        full = _search(query, folder, {"MBM_BACKEND": "torch", "MBM_CACHE": str(cache)})
        assert [h["path"] for h in quick] == [h["path"] for h in full], query
        np.testing.assert_allclose([h["score"] for h in quick], [h["score"] for h in full], atol=2e-3)
    red = _search("a large red cross", folder, onnx, poison=poison)
    assert "large red cross" in red[0]["caption"], red  # scene-013, or scene-039 that has one too


def test_a_changed_folder_or_an_image_query_loads_the_full_model_and_syncs(setup, tmp_path):
    folder, cache, onnx, poison = setup
    Image.new("RGB", (96, 96), (200, 20, 20)).save(folder / "red-square-new.png")
    (folder / "red-square-new.txt").write_text("a large red square")
    refused = _mbm("search", "a large red square", "--gallery", str(folder), env=onnx, poison=poison)
    assert refused.returncode != 0 and "torch was imported" in refused.stderr  # it needed the image tower
    found = _search("a large red square", folder, onnx, k=50)  # the full engine: syncs, then answers
    assert "red-square-new.png" in [Path(h["path"]).name for h in found]
    again = _search("a large red square", folder, onnx, poison=poison, k=50)  # in sync again: no torch
    assert [h["path"] for h in again] == [h["path"] for h in found]
    done = _mbm("search", "--image", str(folder / "red-square-new.png"), "--gallery", str(folder), env=onnx,
                poison=poison)
    assert done.returncode != 0 and "torch was imported" in done.stderr  # an image query needs the image tower


def test_up_to_date_sees_every_change_a_sync_would_make(setup, tmp_path):
    from mbm.engine import EngineConfig
    from mbm.gallery import Gallery
    folder, cache, onnx, _ = setup
    copy = shutil.copytree(folder, tmp_path / "copy")
    config = EngineConfig(cache_dir=str(cache), backend="onnx")
    encoder = find_query_encoder(WORLD, cache / "onnx")
    full = create_model(WORLD, device="cpu")
    assert encoder is not None and encoder.key == full.key

    def fresh() -> bool:
        g = Gallery(copy, encoder, config.store_for(copy))
        try:
            return g.up_to_date()
        finally:
            g.close()

    def sync() -> None:
        g = Gallery(copy, full, config.store_for(copy))
        g.sync()
        g.close()
    assert not fresh()  # never indexed
    sync()
    assert fresh()
    changes = [lambda: (copy / "scene-000.txt").write_text("a tiny blue star"),  # its caption
               lambda: os.utime(copy / "camera.jpg", ns=(1, 1)),  # touched
               lambda: (copy / "scene-001.png").unlink(),  # deleted
               lambda: shutil.copy(copy / "camera.jpg", copy / "camera-2.jpg")]  # new
    for change in changes:
        change()
        assert not fresh()
        sync()
        assert fresh()


def test_changed_weights_retire_the_query_graph(tmp_path):
    model = shutil.copytree(ASSETS / "mbm-shapes", tmp_path / "model")
    spec, cache = str(model), tmp_path / "onnx"
    full = create_model(spec, device="cpu", backend="onnx", cache_dir=cache)
    query = find_query_encoder(spec, cache)
    assert query is not None and query.key == full.key
    np.testing.assert_allclose(query.encode_texts(TEXTS[:6]), full.encode_texts(TEXTS[:6]), atol=1e-5)
    assert find_query_encoder("mbm-shapes", cache) is None  # another spec, even of the same weights
    weights = next(model.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert find_query_encoder(spec, cache) is None  # retrained (or touched): the full model decides


def _local_model(folder: Path, model_cfg: dict, seed: int = 0) -> str:
    """An open_clip folder of random weights (open_clip_config.json and safetensors), as training leaves one."""
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg)
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    return str(folder)


def test_numpy_runs_the_text_towers_that_torch_runs(tmp_path):
    from mbm.models._nptext import NumpyText, describe
    from mbm.models._query import write_torch_manifest
    small = {"embed_dim": 64, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
    specs = {"mbm-world": WORLD, "mbm-shapes": "mbm-shapes",
             "quick_gelu": _local_model(tmp_path / "quick", {**small, "quick_gelu": True}),
             "linear projection": _local_model(tmp_path / "linear", {**small, "text_cfg": {
                 **small["text_cfg"], "proj_type": "linear", "proj_bias": True}})}
    for what, spec in specs.items():
        full = create_model(spec, device="cpu", query_dir=tmp_path / "query" / what)
        tower = describe(full.model)
        assert tower is not None, what
        query = find_query_encoder(spec, tmp_path / "query" / what)  # create_model left its query.json
        assert query is not None and query.key == full.key and query.backend == "torch", what
        np.testing.assert_allclose(query.encode_texts(TEXTS), full.encode_texts(TEXTS), atol=1e-5, err_msg=what)
        assert isinstance(query.run, NumpyText)
    manifest = next((tmp_path / "query" / "quick_gelu").glob("*/query.json"))
    data = json.loads(manifest.read_text())
    data["probe"][0][0] += 0.01  # numpy would not reproduce these: the query process keeps the full model
    manifest.write_text(json.dumps(data))
    assert find_query_encoder(specs["quick_gelu"], tmp_path / "query" / "quick_gelu") is None
    scaled = _local_model(tmp_path / "scaled", {**small, "text_cfg": {**small["text_cfg"], "ls_init_value": 0.5}})
    full = create_model(scaled, device="cpu")
    assert describe(full.model) is None  # layer scale: a tower numpy does not run, so it keeps the full model
    write_torch_manifest(full, Path(scaled) / "open_clip_model.safetensors", tmp_path / "query" / "scaled")
    assert find_query_encoder(scaled, tmp_path / "query" / "scaled") is None


def test_a_text_search_on_the_torch_backend_answers_without_torch(setup, tmp_path):
    folder, _, _, poison = setup
    torch_env = {"MBM_BACKEND": "torch", "MBM_CACHE": str(tmp_path / "cache")}
    full = {q: _search(q, folder, torch_env) for q in ("a red circle", "a small blue star", "лиса", "a cat")}
    assert list((tmp_path / "cache").glob("query/*/query.json")), "the torch backend left no query.json"
    for query, expected in full.items():
        quick = _search(query, folder, torch_env, poison=poison)
        assert [h["path"] for h in quick] == [h["path"] for h in expected], query
        np.testing.assert_allclose([h["score"] for h in quick], [h["score"] for h in expected], atol=1e-5)
    refused = _mbm("search", "a red circle", "--gallery", str(folder), env={**torch_env, "MBM_PRECISION": "bf16"},
                   poison=poison)
    assert refused.returncode != 0 and "torch was imported" in refused.stderr  # bf16 is the full model's to answer
    model = next((tmp_path / "cache").glob("query/*/query.json"))
    data = json.loads(model.read_text())
    assert data["name"] == WORLD and data["text_tower"]["layers"] == 2


def _vectors(folder: Path, cache: Path) -> dict[str, np.ndarray]:
    """{file name: stored image vector} of the gallery's store under `cache`."""
    from mbm.engine import EngineConfig
    store = EngineConfig(cache_dir=str(cache)).store_for(folder)
    import sqlite3
    with sqlite3.connect(store / "gallery.sqlite") as db:
        rows = db.execute("SELECT i.path, v.vector FROM items i JOIN vectors v ON v.item_id=i.id "
                          "WHERE v.kind='image'").fetchall()
    return {path: np.frombuffer(blob, np.float32) for path, blob in rows}


def test_indexing_with_the_onnx_backend_runs_without_torch_once_the_graphs_exist(setup, tmp_path):
    folder, cache, onnx, poison = setup
    manifest = json.loads(next(cache.glob("onnx/*/query.json")).read_text())
    assert manifest["image"]["resize_mode"] == "squash" and manifest["image"]["size"] == 64
    fresh = shutil.copytree(folder, tmp_path / "fresh")
    (fresh / "extra.jpg").write_bytes((fresh / "camera.jpg").read_bytes()[:-20000])  # a truncated JPEG too
    Image.open(fresh / "camera.jpg").resize((333, 200)).save(fresh / "wide.png")
    done = _mbm("index", str(fresh), "--json", env=onnx, poison=poison)  # torch cannot be imported in it
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["items"] == len(list(fresh.glob("*.jpg"))) + len(list(fresh.glob("*.png"))) - 1
    assert [s["path"] for s in report["skipped"]] == ["extra.jpg"]  # said, not fatal, as in the full engine
    quick = _vectors(fresh, cache)
    full_env = {"MBM_BACKEND": "torch", "MBM_CACHE": str(tmp_path / "torch-cache")}
    assert _mbm("index", str(fresh), env=full_env).returncode == 0
    full = _vectors(fresh, tmp_path / "torch-cache")
    assert quick.keys() == full.keys() and "wide.png" in quick
    for name in quick:  # the torch model's vectors, within the ONNX backend's float rounding
        assert float(quick[name] @ full[name]) > 0.9999, name
    hits = _search("a large red cross", fresh, onnx, poison=poison)
    assert "large red cross" in hits[0]["caption"]


@pytest.mark.parametrize("mode", ["squash", "shortest"])
def test_the_torch_free_image_transform_is_open_clips(mode):
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.transform import image_transform

    from mbm.models._query import pil_transform
    size = 224
    theirs = image_transform(size, is_train=False, resize_mode=mode)
    ours = pil_transform({"size": size, "resize_mode": mode, "interpolation": "bicubic",
                          "mean": OPENAI_DATASET_MEAN, "std": OPENAI_DATASET_STD})
    rng = np.random.default_rng(1)
    for w, h in ((640, 480), (480, 640), (1600, 1200), (224, 224), (225, 700), (31, 17), (300, 301)):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        np.testing.assert_allclose(ours(img), theirs(img).numpy(), atol=1e-6, err_msg=f"{w}x{h}")
    grey = Image.fromarray(rng.integers(0, 256, (50, 90), dtype=np.uint8), "L")  # not RGB: converted as open_clip does
    np.testing.assert_allclose(ours(grey), theirs(grey.convert("RGB")).numpy(), atol=1e-6)
