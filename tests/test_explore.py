"""The Explore tab's numbers, on the built-in gallery with the shipped model: the embedding map and the
modality gap, the similarity matrix, exact vs approximate search, the prompt lab and the pipeline trace."""

import sys
import types

import numpy as np
import pytest
from PIL import Image

from mbm import explore, trace
from mbm.data.shapes import make_scene, render
from mbm.explore import _cache, maps, pca_2d
from mbm.models import Encoder

QUERIES = ["a red circle", "a blue star", "a small green square at the top left", "a large yellow heart",
           "a purple hexagon", "a photo of a cat"]


@pytest.fixture
def fresh_cache(monkeypatch):
    """An empty cache of fits and indexes, so a test sees its own fits (and fakes never leak out)."""
    monkeypatch.setattr(_cache, "CACHE", _cache.Cache())


@pytest.fixture(scope="module")
def scene():
    return render(make_scene("test", 7), size=64)


# ---------------------------------------------------------------- the embedding map
def test_the_map_places_every_image_and_every_caption(engine):
    m = engine.embedding_map()
    ids, _ = engine.gallery.image_matrix()
    caption_ids, captions, _ = engine.gallery.captions()
    images = [p for p in m.points if p.kind == "image"]
    texts = [p for p in m.points if p.kind == "caption"]
    assert sorted(p.id for p in images) == sorted(ids.tolist())
    assert [(p.id, p.caption) for p in texts] == list(zip(caption_ids, captions))
    assert len(images) == len(texts) and m.query is None and m.hits == []
    assert all(p.thumbnail is not None and p.thumbnail.is_file() for p in images)
    assert 0 < m.explained[1] <= m.explained[0] < 1


def test_the_modality_gap_is_real_and_visible_on_the_map(engine):
    m = engine.embedding_map()
    gap = m.gap
    assert gap.n == len(engine.gallery)
    assert gap.matched > gap.random + 0.3, gap  # an image is far closer to its own caption than to another's
    assert gap.centroid_distance > 0.1, gap
    centre = {kind: np.mean([(p.x, p.y) for p in m.points if p.kind == kind], axis=0) for kind in ("image", "caption")}
    # the map keeps most of the distance between the clouds: the gap is there to see
    assert np.linalg.norm(centre["image"] - centre["caption"]) > 0.5 * gap.centroid_distance


def test_the_query_and_its_hits_are_those_search_returns(engine):
    m = engine.embedding_map("a red circle", k=7)
    assert m.hits == [h.id for h in engine.search("a red circle", k=7)]
    ranked = sorted((p for p in m.points if p.rank is not None), key=lambda p: p.rank)
    assert [p.id for p in ranked] == m.hits and {p.kind for p in ranked} == {"image"}
    assert [p.rank for p in ranked] == list(range(1, 8))
    assert m.query is not None and all(np.isfinite(m.query))


def test_another_query_reuses_the_fit(engine, fresh_cache, monkeypatch):
    fits = []
    fit = maps._fit_map
    monkeypatch.setattr(maps, "_fit_map", lambda *a: fits.append(a) or fit(*a))
    red, blue, none = (engine.embedding_map(q) for q in ("a red circle", "a blue star", None))
    assert len(fits) == 1
    assert red.query != blue.query and none.query is None
    assert [(p.x, p.y) for p in red.points] == [(p.x, p.y) for p in none.points]


def test_pca_axes_are_the_top_singular_vectors():
    x = np.random.default_rng(0).standard_normal((300, 16)) * np.linspace(3, 0.5, 16) + 2.0
    mean, comps, ratio = pca_2d(x)
    _, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    got, want = (x - mean) @ comps.T, (x - x.mean(0)) @ vt[:2].T
    np.testing.assert_allclose(np.abs(got), np.abs(want), atol=1e-8)  # equal up to each axis's sign
    np.testing.assert_allclose(ratio, s[:2] ** 2 / (s ** 2).sum())


def test_the_map_is_the_pca_of_the_stored_embeddings(engine):
    m = engine.embedding_map("a blue star")
    images, captions = engine.gallery.image_matrix()[1], engine.gallery.captions()[2]
    joint = np.vstack([images, captions]).astype(np.float64)
    centred = joint - joint.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.abs([(p.x, p.y) for p in m.points]), np.abs(centred @ vt[:2].T), atol=1e-5)
    query = engine.encoder.encode_texts(["a blue star"])[0] - joint.mean(0)
    np.testing.assert_allclose(np.abs(m.query), np.abs(query @ vt[:2].T), atol=1e-5)


class FakeUMAP:
    """Stands in for umap.UMAP: 'projects' onto the first two coordinates and records how it was called."""
    calls: list = []

    def __init__(self, n_components, random_state):
        FakeUMAP.calls.append(("init", n_components, random_state))

    def fit_transform(self, x):
        FakeUMAP.calls.append(("fit", x.shape))
        return x[:, :2] * 10

    def transform(self, x):
        FakeUMAP.calls.append(("transform", x.shape))
        return x[:, :2] * 10


def test_umap_is_used_when_installed(engine, fresh_cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    FakeUMAP.calls = []
    assert explore.available_methods() == ["pca", "umap"]
    m = engine.embedding_map("a red circle", method="umap")
    n, d = len(m.points), engine.encoder.embed_dim
    assert FakeUMAP.calls == [("init", 2, 0), ("fit", (n, d)), ("transform", (1, d))]
    images = engine.gallery.image_matrix()[1]
    np.testing.assert_allclose([(p.x, p.y) for p in m.points[:len(images)]], images[:, :2] * 10, rtol=1e-6)
    assert m.method == "umap" and m.explained is None
    np.testing.assert_allclose(m.query, engine.encoder.encode_texts(["a red circle"])[0][:2] * 10, rtol=1e-5)


@pytest.mark.parametrize("method, message", [("umap", "pip install umap-learn"), ("tsne", "unknown projection")])
def test_an_unavailable_projection_says_what_to_do(engine, monkeypatch, method, message):
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap -> ImportError, installed or not
    assert explore.available_methods() == ["pca"]
    with pytest.raises(ValueError, match=message):
        engine.embedding_map("a red circle", method=method)


# ---------------------------------------------------------------- the similarity matrix
def test_the_similarity_matrix_pairs_images_with_their_own_distinct_captions(engine):
    s = engine.similarity_matrix(n=12, seed=3, softmax=True)
    ids, images = engine.gallery.image_matrix()
    _, captions, caption_vecs = engine.gallery.captions()
    own = {i: c for i, c in zip(engine.gallery.captions()[0], captions)}
    assert s.cosine.shape == s.probs.shape == (12, 12) and len(s.thumbnails) == 12 and s.softmax
    assert len(set(s.captions)) == 12 and s.captions == [own[i] for i in s.images]
    np.testing.assert_allclose(s.probs.sum(axis=1), 1, atol=1e-6)
    row = {i: r for r, i in enumerate(ids.tolist())}
    np.testing.assert_allclose(np.diag(s.cosine), [images[row[i]] @ caption_vecs[row[i]] for i in s.images],
                               atol=1e-5)  # the built-in gallery stores images and captions in id order
    logits = s.logit_scale * s.cosine
    np.testing.assert_allclose(s.probs, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_good_model_finds_the_diagonal(engine, seed):
    s = engine.similarity_matrix(n=32, seed=seed)
    assert s.diagonal_hits >= 0.85 * 32  # the shipped model's i->t R@1 is ~96%


def test_the_sample_is_fixed_by_the_seed(engine):
    a, b, c = (engine.similarity_matrix(n=8, seed=s) for s in (5, 5, 6))
    assert a.images == b.images and np.array_equal(a.cosine, b.cosine)
    assert a.images != c.images


@pytest.mark.parametrize("n", [0, 1, 33, 2.5])
def test_the_matrix_size_is_checked(engine, n):
    with pytest.raises(ValueError, match="between 2 and 32"):
        engine.similarity_matrix(n=n)


def test_whole_numbers_from_a_slider_are_taken(engine):
    assert len(engine.similarity_matrix(n=4.0).images) == 4
    assert engine.compare_indexes("a red circle", k=5.0, kind="ivf", knob=16.0).recall == 1.0


def test_a_gallery_without_distinct_captions_says_so(engine, tmp_path):
    for i in range(3):
        render(make_scene("test", i), size=64).save(tmp_path / f"{i}.png")
        (tmp_path / f"{i}.txt").write_text("the same words")
    gallery = engine.gallery_at(tmp_path, store=tmp_path / ".store")
    with pytest.raises(ValueError, match="no captions"):
        engine.similarity_matrix(gallery=gallery)


# ---------------------------------------------------------------- exact vs approximate search
@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_the_widest_knob_finds_the_exact_top_k(engine, kind):
    first = engine.compare_indexes("a red circle", k=10, kind=kind, knob=1)
    c = engine.compare_indexes("a red circle", k=10, kind=kind, knob=first.knob_max)
    assert c.recall == 1.0 and c.overlap == 10
    assert [i for i, _ in c.exact] == [h.id for h in engine.search("a red circle", k=10)]
    assert {i for i, _ in c.exact} == {i for i, _ in c.approx}
    assert set(c.captions) == set(c.thumbnails) >= {i for i, _ in c.exact}
    assert c.exact_ms > 0 and c.approx_ms > 0 and c.knob_name == {"ivf": "nprobe", "hnsw": "efSearch"}[kind]


def test_scanning_one_ivf_list_misses_some_of_the_top_k(engine):
    recalls = [engine.compare_indexes(q, k=10, kind="ivf", knob=1).recall for q in QUERIES]
    assert min(recalls) < 1.0, recalls
    c = engine.compare_indexes(QUERIES[0], k=10, kind="ivf", knob=1)
    assert c.factory == "IVF16,Flat" and c.knob_max == 16  # ~sqrt(307) lists
    assert c.overlap == round(c.recall * len(c.exact)) and len(c.approx) <= 10


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="ivf", knob=0), "from 1 to 16"),
    (dict(kind="ivf", knob=17), "from 1 to 16"),
    (dict(kind="hnsw", knob=10_000), "efSearch must be"),
    (dict(kind="ivf", knob=2.5), "nprobe must be"),
    (dict(kind="lsh", knob=1), "unknown index kind"),
    (dict(text="", kind="ivf", knob=1), "the query is empty"),
])
def test_bad_comparisons_say_what_is_wrong(engine, kwargs, message):
    with pytest.raises(ValueError, match=message):
        engine.compare_indexes(**{"text": "a red circle", **kwargs})


# ---------------------------------------------------------------- the prompt lab
def test_the_prompt_lab_agrees_with_zero_shot(engine, scene):
    labels, templates = ["red circle", "blue star", "green square", " red circle "], ["a photo of a {}.", "a {}."]
    lab = engine.prompt_lab(scene, labels, templates)
    zs = engine.zero_shot(scene, labels, templates)
    assert lab.labels == ["red circle", "blue star", "green square"] and lab.templates == templates
    assert lab.table.shape == (2, 3)
    np.testing.assert_allclose(lab.table.sum(axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(lab.ensemble, [zs.probs[label] for label in lab.labels], atol=1e-6)
    for t, row in zip(templates, lab.table):
        np.testing.assert_allclose(row, [zs.per_template[t][label] for label in lab.labels], atol=1e-6)
    info = lab.prompts[0][0]
    assert info.text == "a photo of a red circle." and not info.truncated and not lab.truncated
    assert info.tokens[0] == "<start_of_text>" and info.tokens[-1] == "<end_of_text>"
    assert [t.removesuffix("</w>") for t in info.tokens[1:-1]] == ["a", "photo", "of", "a", "red", "circle", "."]
    assert info.n_tokens == len(info.tokens)


def test_a_prompt_too_long_for_the_model_is_shown_cut(engine, scene):
    long = "a photo of a {} " + "on a very long and winding road " * 10
    with pytest.warns(UserWarning, match="truncated"):
        lab = engine.prompt_lab(scene, ["red circle", "blue star"], ["a {}.", long])
    short, cut = lab.prompts
    assert not any(p.truncated for p in short)
    for info in cut:
        assert info.truncated and info.n_tokens > lab.context_length
        assert len(info.tokens) == lab.context_length == engine.encoder.context_length
        assert info.tokens[0] == "<start_of_text>" and info.tokens[-1] == "<end_of_text>"
    assert lab.truncated == [p.text for p in cut]


def test_tokens_of_a_hugging_face_tokenizer_are_its_own_cut_at_the_context():
    class Inner:  # stands in for a transformers tokenizer: [CLS] + one id per word + [SEP]
        def __call__(self, text, max_length, truncation):
            ids = [101, *range(1, len(text.split()) + 1), 102]
            return {"input_ids": ids[:max_length] if truncation else ids}

        def convert_ids_to_tokens(self, ids):
            return [{101: "[CLS]", 102: "[SEP]"}.get(i, f"w{i}") for i in ids]

    hf = types.SimpleNamespace(tokenizer=Inner(), clean_fn=str.strip)  # open_clip's HFTokenizer wrapper
    tokens = lambda n, text: Encoder.tokens(types.SimpleNamespace(tokenizer=hf, context_length=n), text)
    assert tokens(8, " a b ") == ["[CLS]", "w1", "w2", "[SEP]"]
    assert tokens(3, "a b c d") == ["[CLS]", "w1", "w2"]


# ---------------------------------------------------------------- how it works
def test_the_trace_shows_each_stage_for_one_example(engine, scene):
    question = "what colour is the star?"
    t = engine.pipeline_trace(scene, question)
    size = engine.encoder.image_size
    assert t.image.size == (size, size) and t.pixels == (3, size, size)
    seen = np.asarray(scene.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), np.float32)
    assert np.abs(np.asarray(t.image, np.float32) - seen).mean() < 2  # de-normalised back to the picture
    assert t.tokens == engine.encoder.tokens(question) and t.tokens[0] == "<start_of_text>"
    assert t.n_tokens == len(t.tokens) and t.context_length == engine.encoder.context_length
    for features in (t.image_features, t.text_features):
        assert features.what and features.shape and features.norm > 0 and len(features.head) == 8
    expected = engine.embed_image(scene) @ engine.encoder.encode_texts([question])[0]
    assert t.cosine == pytest.approx(float(expected), abs=1e-5)
    assert np.linalg.norm(t.image_embedding) == pytest.approx(1, abs=1e-5)
    assert np.linalg.norm(t.text_embedding) == pytest.approx(1, abs=1e-5)
    assert t.colour.shape == (6, 6, 3) and 0 <= t.colour.min() and t.colour.max() <= 1
    fused = engine.fused_answers(scene, question, ("attention", "concat"))
    assert set(t.answers) == {"attention", "concat"}
    for name, probs in t.answers.items():
        assert sum(probs.values()) == pytest.approx(1, abs=1e-5)
        assert list(probs) == list(fused[name])


def test_the_trace_without_fused_heads_says_why(shapes_model, scene):
    t = trace.pipeline_trace(shapes_model, scene, "a red circle")
    assert t.answers == {} and t.colour is None and "no fused heads" in t.note
    assert t.cosine == pytest.approx(float(t.image_embedding @ t.text_embedding))


@pytest.mark.parametrize("image, text", [(None, "a red circle"), ("scene", "   ")])
def test_the_trace_needs_an_image_and_a_text(engine, scene, image, text):
    with pytest.raises(ValueError, match="give an image and type a text"):
        engine.pipeline_trace(scene if image == "scene" else image, text)


def test_a_big_gallery_maps_a_fixed_sample_of_items_and_always_its_hits(engine):
    ids, _ = engine.gallery.image_matrix()
    hits = [int(i) for i in ids[-3:]]
    first = explore.embedding_map(engine.gallery, hit_ids=hits, max_items=50)
    again = explore.embedding_map(engine.gallery, hit_ids=hits[:1], max_items=50)
    shown = {p.id for p in first.points}
    assert len(shown) <= 53 and set(hits) <= shown and first.items == len(ids) > 50
    assert {p.id for p in again.points} - set(hits) == shown - set(hits)  # the same sample for every query
    kinds = [p.kind for p in first.points]
    assert kinds.count("image") == kinds.count("caption") == len(shown)
