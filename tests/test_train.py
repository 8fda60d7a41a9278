"""Training: minimal pairs are real minimal pairs, and a few steps reduce the loss."""

import random

import numpy as np

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
