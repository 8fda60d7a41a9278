"""The synthetic world: deterministic, varied, correctly drawn, with held-out combinations kept out."""

import random

import numpy as np
import pytest

from mbm.data.language import ANSWERS, NUMBERS, captions, describe, questions
from mbm.data.shapes import COLOURS, HELD_OUT, SHAPES, SPLITS, make_scene, render


def test_world_has_the_promised_variety():
    assert len(SHAPES) >= 6 and len(COLOURS) >= 8
    scenes = [make_scene("train", i) for i in range(500)]
    assert {len(s.objects) for s in scenes} == {1, 2, 3, 4}
    assert {o.shape for s in scenes for o in s.objects} == set(SHAPES)
    assert {o.colour for s in scenes for o in s.objects} == set(COLOURS)
    assert len({s.background[0] for s in scenes}) >= 3


def test_same_seed_same_pixels_and_captions():
    a, b = make_scene("test", 42), make_scene("test", 42)
    assert a == b
    assert render(a, 96).tobytes() == render(b, 96).tobytes()
    assert captions(a, random.Random(7)) == captions(b, random.Random(7))
    assert questions(a) == questions(b)
    assert make_scene("test", 43) != a and make_scene("val", 42) != a


@pytest.mark.parametrize("size", [32, 64, 97, 224])
def test_renders_at_any_size(size):
    img = render(make_scene("train", 1), size)
    assert img.size == (size, size) and img.mode == "RGB"


def test_a_drawn_object_has_its_colour_at_its_centre():
    for i in range(50):
        scene = make_scene("test", i, n_objects=1)
        o = scene.objects[0]
        arr = np.asarray(render(scene, 128)).astype(int)
        centre = arr[int(o.cy * 128), int(o.cx * 128)]
        assert np.abs(centre - np.array(o.rgb)).max() <= 2, (o, centre)


def test_held_out_combinations_never_train_and_always_test():
    for i in range(3000):
        assert not any((o.colour, o.shape) in HELD_OUT for o in make_scene("train", i).objects)
    for i in range(300):
        assert any((o.colour, o.shape) in HELD_OUT for o in make_scene("heldout", i).objects)


def test_unknown_split_and_bad_object_count_are_refused():
    with pytest.raises(ValueError, match="choose from"):
        make_scene("training", 0)
    with pytest.raises(ValueError, match="1-4"):
        make_scene("train", 0, n_objects=5)
    assert set(SPLITS) == {"train", "val", "test", "heldout"}


def test_captions_are_varied_and_name_what_is_there():
    scene = make_scene("train", 5, n_objects=3)
    rng = random.Random(0)
    texts = {captions(scene, rng)[0] for _ in range(200)}
    assert len(texts) > 15
    assert any(" left of " in t or " right of " in t or " above " in t or " below " in t for t in texts)
    assert any(t.startswith("three shapes") for t in texts)
    for o in scene.objects:
        assert o.shape in describe(scene) and o.colour in describe(scene)
    assert " a orange" not in " ".join(texts) and "a a" not in " ".join(texts)


def test_questions_have_true_answers_from_the_vocabulary():
    for i in range(200):
        scene = make_scene("val", i)
        present = {(o.colour, o.shape) for o in scene.objects}
        for q, a, kind in questions(scene):
            assert a in ANSWERS
            if kind == "count":
                assert a == NUMBERS[len(scene.objects)]
            if kind == "exists":
                colour_shape = tuple(q.removeprefix("is there a").removeprefix("n").strip(" ?").split())
                assert (a == "yes") == (colour_shape in present), q
            if kind == "colour":
                shape = q.split()[-1].rstrip("?")
                assert [o.colour for o in scene.objects if o.shape == shape] == [a]
