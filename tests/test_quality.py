"""The shipped embedded model meets a quality floor on held-out data (fresh scenes, never trained on)."""

import pytest

from mbm.evaluate import retrieval, zero_shot


@pytest.mark.parametrize("split", ["test", "heldout"])
def test_shipped_model_retrieves_by_full_caption(shapes_model, split):
    r = retrieval(shapes_model, split, n=200)
    assert r["t2i_r1"] >= 0.75 and r["t2i_r5"] >= 0.95, r
    assert r["i2t_r1"] >= 0.70, r


@pytest.mark.parametrize("split", ["test", "heldout"])
def test_shipped_model_names_colour_and_shape_zero_shot(shapes_model, split):
    z = zero_shot(shapes_model, split, n=200)
    assert z["zs_colour"] >= 0.95, z
    assert z["zs_shape"] >= 0.85, z
