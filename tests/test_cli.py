"""The command line as a person runs it: real subprocesses, real files."""

import json
import os
import subprocess
import sys
from pathlib import Path

from mbm.models import create_model

ROOT = Path(__file__).resolve().parents[1]


def run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "mbm", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_models_lists_the_embedded_model():
    out = run("models")
    assert out.returncode == 0
    assert out.stdout.splitlines()[0].startswith("mbm-shapes") and "offline" in out.stdout


def test_eval_prints_recall_and_zero_shot_for_the_shipped_model():
    out = run("eval", "--model", "mbm-shapes", "--pairs", "200", "--zero-shot", "100", "--json")
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)
    assert set(metrics) == {"test", "heldout"}
    for split in metrics.values():
        assert split["t2i_r5"] >= 0.9 and split["zs_colour"] >= 0.9


def test_eval_of_an_unknown_model_is_a_clear_error():
    out = run("eval", "--model", "no-such-model")
    assert out.returncode == 2
    assert "unknown model 'no-such-model'" in out.stderr and "mbm-shapes" in out.stderr
    assert "Traceback" not in out.stderr


def test_train_clip_writes_a_loadable_model_and_a_card(tmp_path):
    out = run("train-clip", "--steps", "3", "--batch-size", "16", "--out", str(tmp_path / "m"),
              "--pairs", "50", "--zero-shot", "20")
    assert out.returncode == 0, out.stderr
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"open_clip_config.json", "open_clip_model.safetensors", "MODEL_CARD.md", "metrics.json"} <= files
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert "3 steps of 16" in card and "| heldout |" in card
    assert create_model(str(tmp_path / "m"), device="cpu").embed_dim == 128
