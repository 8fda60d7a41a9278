"""The command line as a person runs it: real subprocesses, real files."""

import json
from pathlib import Path

import pytest
from conftest import run_mbm

from mbm.models import create_model
from mbm.models._registry import EMBEDDED

ROOT = Path(__file__).resolve().parents[1]


def test_models_lists_the_embedded_model():
    out = run_mbm("models")
    assert out.returncode == 0
    assert out.stdout.splitlines()[0].startswith(EMBEDDED) and "offline" in out.stdout


def test_eval_prints_recall_and_zero_shot_for_the_shipped_model():
    out = run_mbm("eval", "--model", "mbm-shapes", "--pairs", "200", "--zero-shot", "100", "--json")
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)
    assert set(metrics) == {"test", "heldout"}
    for split in metrics.values():
        assert split["t2i_r5"] >= 0.9 and split["zs_colour"] >= 0.9


def test_eval_of_an_unknown_model_is_a_clear_error():
    out = run_mbm("eval", "--model", "no-such-model")
    assert out.returncode == 2
    assert "unknown model 'no-such-model'" in out.stderr and "mbm-shapes" in out.stderr
    assert "Traceback" not in out.stderr


def test_train_clip_writes_a_loadable_model_and_a_card(tmp_path):
    out = run_mbm("train-clip", "--steps", "3", "--batch-size", "16", "--out", str(tmp_path / "m"),
              "--pairs", "50", "--zero-shot", "20")
    assert out.returncode == 0, out.stderr
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"open_clip_config.json", "open_clip_model.safetensors", "MODEL_CARD.md", "metrics.json"} <= files
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert "3 steps of 16" in card and "| heldout |" in card
    assert create_model(str(tmp_path / "m"), device="cpu").embed_dim == 128


def test_index_then_search_a_folder_from_the_command_line(tmp_path, cache):
    from mbm.data.language import describe
    from mbm.data.shapes import make_scene, render
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(30):
        render(make_scene("test", i), size=96).save(folder / f"scene-{i}.png")
        (folder / f"scene-{i}.txt").write_text(describe(make_scene("test", i)))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")

    out = run_mbm("index", str(folder), *cache, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["items"] == 30 and report["skipped"][0]["path"] == "broken.jpg"

    out = run_mbm("search", "a large brown triangle at the top left", "--gallery", str(folder), *cache, "-k", "3",
              "--json")
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    assert len(hits) == 3 and hits[0]["path"].endswith("scene-1.png")

    out = run_mbm("search", "--image", str(folder / "scene-4.png"), "--gallery", str(folder), *cache, "-k", "1")
    assert out.returncode == 0 and "scene-4.png" in out.stdout

    out = run_mbm("describe", str(folder / "scene-4.png"), "--gallery", str(folder), *cache, "-k", "3")
    assert out.returncode == 0 and describe(make_scene("test", 4)) in out.stdout


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One gallery cache for this module's commands, so the built-in gallery is indexed once."""
    return ["--cache", str(tmp_path_factory.mktemp("cache"))]


def test_search_exit_codes_scripts_can_trust(tmp_path, cache):
    nothing = run_mbm("search", "a red circle", "--threshold", "1.5", *cache)
    assert nothing.returncode == 1 and nothing.stdout == ""
    empty = run_mbm("search", "   ", *cache)
    assert empty.returncode == 2 and "the query is empty" in empty.stderr and "Traceback" not in empty.stderr
    missing = run_mbm("index", str(tmp_path / "nope"), *cache)
    assert missing.returncode == 2 and "missing" in missing.stderr
    offline = run_mbm("search", "a cat", "--model", "ViT-B-32:laion2b_s34b_b79k", *cache)
    assert offline.returncode == 3 and "model hub is unreachable" in offline.stderr


def test_classify_prints_probabilities(tmp_path):
    from mbm.data.shapes import make_scene, render
    image = tmp_path / "star.png"
    render(make_scene("test", 0, n_objects=1).replace_object(0, shape="star", colour="blue"), size=64).save(image)
    out = run_mbm("classify", str(image), "--labels", "blue star,red circle", "green square", "--json")
    assert out.returncode == 0, out.stderr
    probs = json.loads(out.stdout)["probs"]
    assert list(probs)[0] == "blue star" and set(probs) == {"blue star", "red circle", "green square"}
    bad = run_mbm("classify", str(tmp_path / "missing.png"), "--labels", "a", "b")
    assert bad.returncode == 2 and "missing.png" in bad.stderr


def test_train_fusion_then_eval_fusion(tmp_path):
    out = tmp_path / "heads"
    trained = run_mbm("train-fusion", "--strategy", "concat,text-only", "--scenes", "60", "--epochs", "2",
                  "--eval-scenes", "10", "--out", str(out))
    assert trained.returncode == 0, trained.stderr
    assert "epoch 2/2" in trained.stdout and "| concat | i.i.d. test |" in trained.stdout
    assert {"concat.safetensors", "text-only.safetensors", "heads.json", "MODEL_CARD.md"} <= {p.name for p in
                                                                                               out.iterdir()}
    evaluated = run_mbm("eval-fusion", "--heads", str(out), "--scenes", "10", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert set(metrics["test"]) == {"concat", "text-only"} and 0 <= metrics["heldout"]["concat"]["all"] <= 1
    bad = run_mbm("train-fusion", "--strategy", "sum", "--scenes", "5", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "unknown fusion strategy 'sum'" in bad.stderr
