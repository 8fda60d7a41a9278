"""Training: minimal pairs are real minimal pairs, and a few steps reduce the loss."""

import random

import numpy as np

from mbm.data.backgrounds import nearest_shape
from mbm.data.shapes import HELD_OUT, SHAPES
from mbm.train.clip import TrainConfig, default_model_cfg, lr_at, make_batch, train


def _diff(a, b):
    return [(x, y) for x, y in zip(a.objects, b.objects) if x != y]


def test_batches_hold_groups_of_minimal_variants():
    scenes, texts = make_batch(random.Random(0), 128, group_fraction=1.0, group_size=4)
    assert len(scenes) == len(texts) == 128
    variants = shape_changes = 0
    for g in range(0, 128, 4):
        base, base_text = scenes[g], texts[g]
        for scene, text in zip(scenes[g + 1:g + 4], texts[g + 1:g + 4]):
            if len(scene.objects) != len(base.objects) or len(_diff(base, scene)) != 1:
                continue  # a filler scene: the caption could not tell a variant apart
            (x, y), = _diff(base, scene)
            assert (x.shape != y.shape) != (x.colour != y.colour)  # exactly one attribute changed
            assert (x.row, x.col, x.size) == (y.row, y.col, y.size) and text != base_text
            variants += 1
            shape_changes += x.shape != y.shape
    assert variants >= 0.6 * 96 and shape_changes >= 0.6 * variants
    assert len(set(texts)) >= 0.9 * len(texts)


def test_the_nearest_shape_is_the_silhouette_a_small_tower_confuses():
    # at one area a hexagon is nearly a circle; a star and a cross are nothing like one
    assert nearest_shape("circle") == "hexagon" and nearest_shape("hexagon") == "circle"
    assert all(nearest_shape(s) != s and nearest_shape(s) in SHAPES for s in SHAPES)
    assert "star" not in {nearest_shape("circle"), nearest_shape("square")}


def test_hard_groups_change_a_shape_to_its_nearest_first():
    def first_changes(hard_share):
        scenes, _ = make_batch(random.Random(0), 256, group_fraction=1.0, group_size=4, hard_share=hard_share)
        out = []
        for g in range(0, 256, 4):
            diff = _diff(scenes[g], scenes[g + 1]) if len(scenes[g].objects) == len(scenes[g + 1].objects) else []
            if len(diff) == 1 and diff[0][0].shape != diff[0][1].shape:
                (x, y), = diff
                if (x.colour, nearest_shape(x.shape)) not in HELD_OUT:  # held-out pairs are never trained on
                    out.append(y.shape == nearest_shape(x.shape))
        return out
    hard, plain = first_changes(1.0), first_changes(0.0)
    # every shape group meets the pair it finds hardest, but where a caption could not name the change
    assert len(hard) >= 30 and sum(hard) >= 0.9 * len(hard)
    assert sum(plain) < 0.5 * len(plain)  # by chance, about one group in seven


def test_learning_rate_warms_up_then_decays():
    cfg = TrainConfig(lr=1e-3, warmup=0.1)
    assert lr_at(0.0, cfg) == 0 and abs(lr_at(0.1, cfg) - 1e-3) < 1e-12
    assert lr_at(0.5, cfg) < 1e-3 and lr_at(1.0, cfg) < 1e-9


def test_a_few_steps_reduce_the_loss():
    cfg = TrainConfig(steps=40, batch_size=32, warmup=0.05, model_cfg=default_model_cfg())
    seen = []
    model, history = train(cfg, on_step=lambda step, progress, loss: seen.append(step))
    losses = np.array([loss for _, _, loss in history])
    assert len(history) == 40 and seen == list(range(1, 41))
    assert losses[-10:].mean() < losses[:5].mean() - 0.3, losses
    assert not model.training


def test_training_can_be_stopped_early():
    cfg = TrainConfig(steps=1000, batch_size=8, model_cfg=default_model_cfg())
    _, history = train(cfg, should_stop=lambda: True)
    assert history == []
