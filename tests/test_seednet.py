"""SeedNet: shapes and gradients, a short run that learns, a strict safetensors round trip, the shipped weights."""

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from mbm.data.vqa import ANSWERS, MAX_WORDS, examples, tokenize
from mbm.train.seednet import (
    SeedNet,
    SeedNetConfig,
    batch_loss,
    evaluate_seednet,
    load_seednet,
    make_batch,
    pixels,
    save_seednet,
    train_seednet,
)

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "fusion" / "seednet"


def tiny(hidden: int = 64) -> SeedNetConfig:
    """About 40k weights: seconds to train on a CPU."""
    return SeedNetConfig(channels=(8, 16, 32), word_dim=16, gru_hidden=32, colour_channels=8, d=32, hidden=hidden)


@pytest.mark.parametrize("hidden", [0, 64])
def test_forward_gives_one_logit_per_answer_and_every_weight_a_gradient(hidden):
    torch.manual_seed(0)
    model = SeedNet(tiny(hidden)).train()
    images, words, labels = make_batch(random.Random(0), 6)
    assert images.shape == (6, 3, 64, 64) and words.shape == (6, MAX_WORDS)
    logits = model(images, words)
    assert logits.shape == (6, len(ANSWERS)) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, labels).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert isinstance(model.head, torch.nn.Linear) == (hidden == 0)


def test_the_question_feature_is_the_gru_state_after_the_last_real_word():
    model = SeedNet(tiny()).eval()
    _, words, _ = make_batch(random.Random(1), 8)
    with torch.no_grad():
        batched = model.encode_words(words)  # (B, d), questions of different lengths padded to MAX_WORDS
        for row, ids in zip(batched, words):
            real = ids[ids != 0][None]  # (1, L) without padding
            _, last = model.gru(model.embed(real))
            torch.testing.assert_close(row, torch.relu(model.word_proj(last[0, 0])))


def test_batches_ask_several_questions_of_each_scene_in_order():
    images, words, labels = make_batch(random.Random(3), 5, per_scene=3)
    assert images.shape == (5, 3, 64, 64) and words.shape == (15, MAX_WORDS) and labels.shape == (15,)
    for scene in range(5):
        rows = words[3 * scene:3 * scene + 3]
        assert len({tuple(r.tolist()) for r in rows}) == 3  # distinct questions of the same scene
    model = SeedNet(tiny()).eval()
    with torch.no_grad():  # sharing a scene's image features across its questions changes nothing
        shared = batch_loss(model, images, words, labels)
        direct = torch.nn.functional.cross_entropy(model(images.repeat_interleave(3, 0), words), labels)
    torch.testing.assert_close(shared, direct)


def test_a_short_run_beats_the_majority_answer():
    n_val = 40
    counts = Counter(e.answer for e in examples("val", n_val))
    majority = counts.most_common(1)[0][1] / sum(counts.values())
    seen = []
    model, history = train_seednet(tiny(), steps=120, batch_size=32, lr=3e-3, seed=0,
                                   on_step=lambda step, progress, loss: seen.append(step))
    assert len(history) == 120 and seen == list(range(1, 121)) and not model.training
    acc = evaluate_seednet(model, "val", n_val)
    assert set(acc) == {"all", "colour", "shape_at", "count", "exists", "absent", "empty"}
    assert acc["all"] > majority + 0.05, (acc, majority)


def test_evaluation_shares_scene_features_without_changing_answers():
    torch.manual_seed(0)
    model = SeedNet(tiny()).eval()
    exs = examples("test", 6, start=3)
    images = pixels([e.scene for e in exs])
    words = torch.tensor([tokenize(e.question) for e in exs])
    with torch.no_grad():
        correct = (model(images, words).argmax(1) == torch.tensor([e.label for e in exs])).float()
    acc = evaluate_seednet(model, "test", 6, start=3, batch_size=4)
    assert acc["all"] == round(correct.mean().item(), 4)
    for qtype in ("colour", "shape_at", "count", "exists", "absent", "empty"):
        mask = torch.tensor([e.qtype == qtype for e in exs])
        assert acc[qtype] == round(correct[mask].mean().item(), 4)


def test_training_can_be_stopped_early():
    _, history = train_seednet(tiny(), steps=1000, batch_size=4, should_stop=lambda: True)
    assert history == []


def test_save_load_round_trip_is_exact_and_refuses_pickles(tmp_path):
    torch.manual_seed(0)
    cfg = tiny()
    model = SeedNet(cfg).eval()
    images, words, _ = make_batch(random.Random(2), 5)
    save_seednet(model, cfg, tmp_path / "m", metrics={"test": {"all": 0.5}})
    info = json.loads((tmp_path / "m" / "seednet.json").read_text())
    assert info["answers"] == list(ANSWERS) and info["metrics"]["test"]["all"] == 0.5
    loaded = load_seednet(tmp_path / "m")
    assert loaded.cfg == cfg and not loaded.training
    with torch.no_grad():
        assert torch.equal(model(images, words), loaded(images, words))
    torch.save(model.state_dict(), tmp_path / "m" / "seednet.safetensors")  # a pickle under the right name
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_seednet(tmp_path / "m")
    (tmp_path / "m" / "seednet.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "m" / "seednet.pt")
    with pytest.raises(FileNotFoundError):
        load_seednet(tmp_path / "m")


@pytest.mark.parametrize("split", ["test", "heldout", "test_sample"])
def test_shipped_seednet_reproduces_its_recorded_accuracy(split):
    info = json.loads((SHIPPED / "seednet.json").read_text())
    recorded = info["metrics"][split]
    assert (SHIPPED / "seednet.safetensors").stat().st_size < 5e6
    acc = evaluate_seednet(load_seednet(SHIPPED), split.removesuffix("_sample"), recorded["n_scenes"])
    for key in ("all", "colour", "shape_at", "count", "exists", "absent", "empty"):
        assert abs(acc[key] - recorded[key]) <= 0.02, (key, acc, recorded)
    assert info["metrics"]["test"]["all"] > 0.6 and info["metrics"]["test"]["exists"] > 0.8  # far above chance
