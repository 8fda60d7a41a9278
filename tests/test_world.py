"""The widened world of mbm-world: data preparation from a fixture (no network), the widened renderer,
multilingual tokens, and a tiny training run that loads back through `create_model`."""

from __future__ import annotations

import io
import json
import random
import tarfile
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from mbm.data import backgrounds, emoji, world
from mbm.data.shapes import COLOURS, make_scene
from mbm.models._registry import EMBEDDED, SHAPES, WORLD

LOCALES = ("en", "ja", "ru")
# Two concepts in every style, one (with skin tones, folded into its base) missing from Fluent, one component.
FIXTURE = [
    {"hexcode": "1F98A", "emoji": "\U0001F98A", "group": 3,
     "names": {"en": ["fox", "face"], "ja": ["キツネ"], "ru": ["лиса", "морда"]}},
    {"hexcode": "1F34E", "emoji": "\U0001F34E", "group": 4,
     "names": {"en": ["red apple", "fruit"], "ja": ["赤いリンゴ"], "ru": ["красное яблоко"]}},
    {"hexcode": "1F44B", "emoji": "\U0001F44B", "group": 1,
     "names": {"en": ["waving hand"], "ja": ["手を振る"], "ru": ["машущая рука"]}},
    {"hexcode": "1F3FB", "emoji": "\U0001F3FB", "group": 2,
     "names": {"en": ["light skin tone"], "ja": ["肌色"], "ru": ["светлый тон"]}},
]
COLOURS_OF = {"1F98A": (240, 120, 20), "1F34E": (220, 30, 30), "1F44B": (250, 200, 60)}


def _tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _png(rgb) -> bytes:
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    img.paste(Image.new("RGBA", (40, 40), (*rgb, 255)), (12, 12))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def make_packages(folder) -> dict[str, emoji.Source]:
    """Fake npm tarballs laid out as the real ones, and a Source table with their hashes."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for loc in LOCALES:
        entries = []
        for e in FIXTURE:
            label, *tags = e["names"][loc]
            entry = {"label": label, "hexcode": e["hexcode"], "emoji": e["emoji"], "group": e["group"],
                     "tags": tags, "version": 1}
            if e["hexcode"] == "1F44B":
                entry["skins"] = [{"label": f"{label}: light skin tone", "hexcode": "1F44B-1F3FB", "group": 1}]
            entries.append(entry)
        data[f"package/{loc}/data.json"] = json.dumps(entries, ensure_ascii=False).encode()
    files = {"emojibase": _tar(folder / "emojibase.tgz", data)}
    files["twemoji"] = _tar(folder / "twemoji.tgz", {f"package/img/twitter/64/{h.lower()}.png": _png(c)
                                                     for h, c in COLOURS_OF.items()})
    icons = {h: f'<circle cx="16" cy="16" r="12" fill="rgb{c}"/>' for h, c in COLOURS_OF.items() if h != "1F44B"}
    files["fluent"] = _tar(folder / "fluent.tgz", {
        "package/icons.json": json.dumps({"width": 32, "height": 32,
                                          "icons": {f"i{h}": {"body": b} for h, b in icons.items()}}).encode(),
        "package/chars.json": json.dumps({h.lower(): f"i{h}" for h in icons}).encode()})
    return {k: emoji.Source("npm", f"{k}@0", p.name, emoji.sha256(p)) for k, p in files.items()}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    pytest.importorskip("cairosvg")
    root = tmp_path_factory.mktemp("cache")
    sources = make_packages(root / "emoji" / "downloads")
    emoji.prepare(root, size=32, sources=sources, locales=LOCALES)
    return root


def test_prepare_renders_concepts_present_in_every_style(cache):
    arrays, concepts = emoji.load(cache, 32)
    assert [c["hexcode"] for c in concepts] == ["1F98A", "1F34E"]  # no waving hand (no Fluent), no component
    assert set(arrays) == {"twemoji", "fluent"} and arrays["fluent"].shape == (2, 32, 32, 4)
    for style in arrays:  # the apple is red in both styles
        rgb = arrays[style][1][16, 16]
        assert rgb[3] == 255 and rgb[0] > 180 and rgb[1] < 80
    assert concepts[0]["names"]["ru"] == ["лиса", "морда"]


def test_fetch_refuses_a_file_with_the_wrong_hash(tmp_path):
    sources = make_packages(tmp_path)
    assert emoji.fetch(tmp_path, sources)["twemoji"] == tmp_path / "twemoji.tgz"
    bad = {"twemoji": emoji.Source("npm", "x@0", "twemoji.tgz", "0" * 64)}
    with pytest.raises(ValueError, match="sha256"):
        emoji.fetch(tmp_path, bad)


def test_captions_name_the_concept_in_one_locale():
    concept = {"names": {"en": ["fox", "face"], "ja": ["キツネ"]}}
    seen = {world.caption(concept, random.Random(i)) for i in range(400)}
    phrased = {world.phrased(p, "fox") for p in world.ENGLISH_PHRASES}
    assert {"fox", "キツネ", "a fox", "fox: face"} <= seen and seen <= {"fox", "キツネ", "fox: face", *phrased}
    assert world.caption({"names": {"en": ["owl"]}}, random.Random(3), "en") in {"owl", "an owl", "the owl",
                                                                                 "a picture of an owl", "owl emoji",
                                                                                 "an emoji of an owl"}


def _one(kind: str, drawing: str, colour: str = "red"):
    base = next(s for i in range(200) if (s := make_scene("test", i, n_objects=1)).objects[0].colour == colour)
    look = backgrounds.Look(kind, drawing, rotation=0.0, seed=1, degrade=False)
    return backgrounds.widen(base, random.Random(0), look, diameter=0.6)


@pytest.mark.parametrize("kind", [*backgrounds.KINDS, backgrounds.UNSEEN_PHOTO, backgrounds.UNSEEN_TEXTURE])
def test_backgrounds_differ_and_keep_the_object_visible(kind):
    img = np.asarray(backgrounds.render(_one(kind, "filled"), 64)).astype(int)
    corner = img[:6, :6].reshape(-1, 3).mean(0)
    assert np.abs(img.reshape(-1, 3) - np.array(COLOURS["red"])).sum(1).min() < 60  # red pixels are there
    if kind in backgrounds.TONES:
        assert abs(corner.mean() - backgrounds.TONES[kind]) < 40


@pytest.mark.parametrize("drawing", ["outline", "hand"])
def test_outlines_and_strokes_draw_the_colour_and_leave_the_inside_empty(drawing):
    scene = _one("white", drawing)
    o = scene.objects[0]
    img = np.asarray(backgrounds.render(scene, 64)).astype(int)
    red = np.abs(img - np.array(COLOURS["red"])).sum(-1) < 90  # (H, W)
    assert red.sum() > 20
    centre = img[round(o.cy * 64), round(o.cx * 64)]
    assert centre.min() > 230  # white inside: only the line is drawn


def test_widened_single_shapes_keep_their_words_true():
    rng = random.Random(3)
    for i in range(50):
        s = backgrounds.widen(make_scene("train", i, n_objects=1), rng)
        o, d = s.objects[0], s.background[2][0]
        assert o.size == backgrounds.size_word(d) and o.row == min(2, int(o.cy * 3))


def test_background_weights_make_the_hard_kinds_likelier_and_keep_the_rest():
    def kinds(weights):
        rng = random.Random(5)
        return [backgrounds.widen(make_scene("train", i, n_objects=1), rng, kind_weights=weights).background[1].kind
                for i in range(800)]
    plain, hard = kinds(None), kinds({"photo": 3, "texture": 2})
    assert plain.count("photo") < 140 < 180 < hard.count("photo")  # 1/8 of 800 = 100; 3/11 of it = 218
    assert set(hard) == set(backgrounds.KINDS) and hard.count("texture") > plain.count("texture")


def test_every_script_gets_distinct_tokens():
    import open_clip
    tok = open_clip.SimpleTokenizer(context_length=48)
    words = ["Fuchs", "renard", "キツネ", "лиса", "狐狸", "लोमड़ी", "จิ้งจอก"]
    rows = tok(words)  # (N, 48)
    lengths = (rows != 0).sum(1)
    assert (lengths > 2).all()  # start, end and at least one token of the word
    assert len({tuple(r.tolist()) for r in rows}) == len(words)


@pytest.fixture(scope="module")
def tiny(cache, tmp_path_factory):
    """A model trained for 4 steps on the fixture's world, saved: (folder, curve rows)."""
    from mbm.train.clip import TrainConfig, save
    from mbm.train.world import train_world, world_model_cfg
    cfg = TrainConfig(steps=4, batch_size=8, world=str(cache), holdout_style="twemoji",
                      model_cfg=world_model_cfg(32, width=8, embed_dim=32, text_width=32, text_layers=1))
    model, history, curve = train_world(cfg, every=2)
    return save(model, cfg, tmp_path_factory.mktemp("tiny") / "model"), curve


def test_tiny_world_training_loads_back(tiny):
    from mbm.models import create_model
    folder, curve = tiny
    assert [r["step"] for r in curve] == [2, 4] and 0 <= curve[-1]["r10_holdout"] <= 1
    vecs = create_model(str(folder), device="cpu").encode_texts(["лиса", "キツネ"])
    assert vecs.shape == (2, 32) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-3)


def test_training_runs_on_the_device_it_is_given_and_saves_from_the_cpu(cache):
    """`--device cuda` is the same recipe on a GPU; without one it says so instead of failing inside torch."""
    import torch

    from mbm.errors import InputError
    from mbm.train.clip import TrainConfig
    from mbm.train.world import train_world, world_model_cfg
    cfg = TrainConfig(steps=2, batch_size=8, world=str(cache), holdout_style="twemoji", device="cuda",
                      model_cfg=world_model_cfg(32, width=8, embed_dim=32, text_width=32, text_layers=1))
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device.*--device cpu"):
            train_world(cfg)
    else:
        model, history, curve = train_world(cfg, every=1)
        assert len(history) == 2 and [r["step"] for r in curve] == [1, 2]
        assert {p.device.type for p in model.parameters()} == {"cpu"}  # `save` writes what it is handed


def test_world_reports_measure_every_locale_and_row(cache, tiny):
    from mbm.evaluate_world import emoji_report, robustness_report
    from mbm.models import create_model
    encoder = create_model(str(tiny[0]), device="cpu")
    report = emoji_report(encoder, world.EmojiSet.load(cache, 32), "twemoji")
    assert report["concepts"] == 2 and set(report["per_locale"]) == set(LOCALES)
    assert report["t2i_r10"] == 1.0  # 2 concepts: both are in any top 10
    rows = robustness_report(encoder, n=3)
    assert {"background white", "drawing hand", "size 60-90%", "degraded"} <= set(rows)
    assert all(0 <= r["joint"] <= r["shape"] + 1 for r in rows.values())


def test_both_embedded_models_are_known_by_name_and_mbm_world_is_the_default():
    from mbm.models._registry import classify_spec, embedded_dir, list_models
    assert EMBEDDED == WORLD and list_models()[:2] == [WORLD, SHAPES]
    for name in (WORLD, SHAPES):
        assert classify_spec(name) == "embedded" and (embedded_dir(name) / "open_clip_model.safetensors").is_file()


def test_mbm_world_loads_and_reads_every_script():
    """(Its load time, < 3 s in issue 16, is measured by benchmarks/bench_load.py, not here.)"""
    from mbm.models import create_model
    encoder = create_model("mbm-world", device="cpu")
    vecs = encoder.encode_texts(["fox", "Fuchs", "キツネ", "лиса"])
    assert vecs.shape[0] == 4 and np.isfinite(vecs).all()


def test_command_line_trains_evaluates_and_writes_the_card(cache, tmp_path):
    from conftest import run_mbm
    out, small = tmp_path / "m", ["--image-size", "32", "--width", "8", "--embed-dim", "32", "--text-width", "32"]
    done = run_mbm("train-clip", "--world", "--cache", str(cache), "--steps", "2", "--batch-size", "8",
                   "--curve-every", "1", *small, "--text-layers", "1", "--background-weights", "photo=2",
                   "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert '"step": 2' in done.stdout and (out / "curve.json").is_file()
    (tmp_path / "baseline.json").write_text("{}")
    done = run_mbm("eval", "--world", "--model", str(out), "--cache", str(cache), "--pairs", "20", "--zero-shot", "8",
                   "--robust", "2", "--card", "--baseline", str(tmp_path / "baseline.json"))
    assert done.returncode == 0, done.stderr
    card = (out / "MODEL_CARD.md").read_text()
    assert "never appears in training" in card and "| background hand" not in card and "| drawing hand |" in card
    assert "python -m mbm train-clip --world --steps 2 --background-weights photo=2" in card
    bad = run_mbm("train-clip", "--world", "--background-weights", "carpet=2", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "the kinds are grey, light" in bad.stderr


def test_training_varies_photos_and_textures_and_the_evaluation_keeps_unseen_photos_apart():
    """`vary` (training) recolours photo crops and adds texture patterns; the evaluation's looks never vary, and its
    'unseen photo' row crops pictures that neither the photo kind nor training's varied looks draw."""
    seen = {im.tobytes() for im in (*backgrounds.photos(), *backgrounds.more_photos())}
    assert backgrounds.unseen_photos() and not seen & {im.tobytes() for im in backgrounds.unseen_photos()}
    rng = random.Random(0)
    looks = [backgrounds.sample_look(rng, vary_share=0.5) for _ in range(400)]
    assert 150 < sum(look.vary for look in looks) < 250
    assert not any(backgrounds.sample_look(random.Random(i)).vary for i in range(50))  # the evaluation's default
    plain, varied = (np.asarray(backgrounds.background("photo", random.Random(3), 64, vary=v)).astype(int)
                     for v in (False, True))
    assert np.abs(plain - varied).mean() > 10  # a crop from the wider pool, flipped and recoloured
    patterns = {np.asarray(backgrounds.background("texture", random.Random(i), 64, vary=True)).std().round(1)
                for i in range(40)}
    assert len(patterns) > 30


@pytest.mark.parametrize("kind", ["photo", backgrounds.UNSEEN_PHOTO])
def test_a_cluttered_background_never_hides_its_object(kind, monkeypatch):
    """Each object takes the colour its photo crop first shows around it (the worst case for a visitor's eye); the
    renderer draws the background again until the object stands out, as flat kinds already keep their distance."""
    def contrast(i: int) -> float:
        look = backgrounds.Look(kind, "filled", rotation=0.0, seed=i, degrade=False)
        scene = backgrounds.widen(make_scene("test", i, n_objects=1), random.Random(i), look, diameter=0.3)
        o, s = scene.objects[0], 128
        first = np.asarray(backgrounds.background(kind, random.Random(i), s), np.float32)
        y, x, r = round(o.cy * s), round(o.cx * s), round(0.15 * s)
        hidden = tuple(int(c) for c in first[y - r:y + r + 1, x - r:x + r + 1].reshape(-1, 3).mean(0))
        scene = replace(scene, objects=(replace(o, rgb=hidden),))
        img = np.asarray(backgrounds.render(scene, s, supersample=1), np.float32)
        yy, xx = np.mgrid[0:s, 0:s]
        ring = (np.hypot(yy - y, xx - x) > 1.2 * r) & (np.hypot(yy - y, xx - x) < 1.8 * r)
        return float(np.linalg.norm(img[ring].mean(0) - hidden))
    kept = [contrast(i) for i in range(16)]
    monkeypatch.setattr(backgrounds, "MIN_VISIBLE", 0.0)  # the rule off: the first crop stays
    lost = [contrast(i) for i in range(16)]
    assert sum(c > 40 for c in kept) >= 14 and sum(c > 40 for c in lost) <= 6


def test_clutter_heaps_the_training_pictures_but_none_named_after_a_shape(monkeypatch):
    monkeypatch.setattr(backgrounds, "_CLUTTER", [])
    names = [["fox", "face"], ["red heart", "love"], ["waving hand"], ["star-struck", "star", "eyes"]]
    colours = [(240, 120, 20), (220, 30, 30), (250, 200, 60), (40, 200, 40)]
    pics = np.zeros((4, 16, 16, 4), np.uint8)
    for k, rgb in enumerate(colours):
        pics[k, 2:14, 2:14] = (*rgb, 255)
    data = world.EmojiSet({"noto": pics, "twemoji": pics}, [{"names": {"en": n}} for n in names])
    kept = world.clutter_pictures(data, ["noto"])
    assert len(kept) == 2 and {tuple(p[8, 8, :3]) for p in kept} == {colours[0], colours[2]}
    assert not world.clutter_pictures(data, []).size
    rng = random.Random(0)
    looks = [backgrounds.sample_look(rng, vary_share=0.5, clutter_share=0.5) for _ in range(400)]
    assert 60 < sum(look.clutter for look in looks) < 140 and all(look.vary for look in looks if look.clutter)
    plain = backgrounds.background("photo", random.Random(1), 64, vary=True, clutter=True)  # no pictures given yet
    backgrounds.use_clutter(kept)
    heaps = [np.asarray(backgrounds.background("photo", random.Random(i), 64, vary=True, clutter=True)).astype(int)
             for i in range(12)]
    assert np.abs(np.asarray(plain).astype(int) - heaps[1]).mean() > 10
    near = lambda img, rgb: (np.abs(img - np.array(rgb)).sum(-1) < 40).mean()  # noqa: E731
    assert sum(near(h, colours[0]) > 0.02 or near(h, colours[2]) > 0.02 for h in heaps) >= 5  # half recoloured
    assert max(near(h, colours[1]) for h in heaps) < 0.02  # the heart never does
