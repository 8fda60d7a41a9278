"""The encoder's fast paths against the plain one (issue 7): the same embeddings within tolerance and the same
top-k in a real FAISS search over the built-in gallery; the ONNX files cached and reused; clear errors."""

import sys

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

import mbm.models._onnx as onnx_backend
from mbm.data.shapes import make_scene, render
from mbm.engine import Engine, EngineConfig
from mbm.models import create_model
from mbm.models._device import cpu_has_bf16
from mbm.models.encoder import Encoder

QUERIES = ["a red circle", "a blue square", "a green triangle on the left", "two yellow stars", "a purple heart",
           "a small orange shape above a large one", "a photo of a dog", "a grey square on the right"]
TEXTS = QUERIES + ["x", "a " + "very " * 80 + "long caption cut at the context length"]
K = 5
# Lowest cosine allowed between a fast path's embedding and the plain one's. fp32 paths compute the same sums in
# another order: the 1e-3. bf16 keeps 8 bits of mantissa, so each weight and activation is off by up to
# 2**-9 (0.2%); the errors mostly cancel (measured: 0.99994 for mbm-shapes and for a ViT-B-32), and 0.995 still
# fails any broken path (a wrong layout or a missed cast lands far below 0.99).
MIN_COSINE = {"channels_last": 1 - 1e-3, "onnx": 1 - 1e-3, "bf16": 0.995}
# How far a query-image score may move, for the top-k check: only items whose plain scores lie this close may trade
# places. fp32 paths: float rounding (measured 2e-7). bf16: measured up to 3.3e-3 on this gallery, so 1e-2; bf16
# does reorder near-ties (one query of eight here), so for it the check is "the same items, up to near-ties".
TIE = {"channels_last": 1e-4, "onnx": 1e-4, "bf16": 1e-2}


@pytest.fixture(scope="module")
def plain():
    """The plain path: fp32, contiguous, the torch model's own methods."""
    return create_model("mbm-shapes", device="cpu", channels_last=False)


@pytest.fixture(scope="module")
def mbm_cache(tmp_path_factory):
    """An mbm cache folder; the onnx backend exports into its `onnx/` (as an Engine configured with it would)."""
    return tmp_path_factory.mktemp("mbm-cache")


@pytest.fixture(scope="module")
def onnx_model(mbm_cache):
    return create_model("mbm-shapes", device="cpu", backend="onnx", cache_dir=mbm_cache / "onnx")


@pytest.fixture(scope="module", params=["channels_last", "bf16", "onnx"])
def fast(request):
    """(name, encoder) of each fast path."""
    if request.param == "channels_last":
        return request.param, create_model("mbm-shapes", device="cpu", channels_last=True)
    if request.param == "bf16":
        if not cpu_has_bf16():
            pytest.skip("this CPU has no bf16 instructions (AVX512-BF16, AMX or ARM BF16)")
        return request.param, create_model("mbm-shapes", device="cpu", precision="bf16")
    return request.param, request.getfixturevalue("onnx_model")


@pytest.fixture(scope="module")
def images():
    """Rendered scenes at the model's size and larger, a grey one and a tall one: 11 in all."""
    scenes = [render(make_scene("test", i), 64 if i % 2 else 96) for i in range(9)]
    return scenes + [Image.new("L", (40, 90), 128), Image.new("RGB", (64, 200), (200, 30, 30))]


def _engine(encoder, cache) -> Engine:
    """An engine on the built-in gallery with `encoder`, indexed into its own cache: embeddings are filed under
    the weights' key, which every path shares, so a shared cache would hand one path's vectors to the next."""
    engine = Engine(EngineConfig(cache_dir=str(cache)), encoder=encoder)
    assert len(engine.gallery) > 300
    return engine


@pytest.fixture(scope="module")
def plain_scores(plain, tmp_path_factory) -> dict[str, dict[str, float]]:
    """query -> {gallery file (a video: file@moment): plain score}, every item of the built-in gallery."""
    engine = _engine(plain, tmp_path_factory.mktemp("plain"))
    n = len(engine.gallery)
    return {q: {h.where: h.score for h in engine.search(q, k=n)} for q in QUERIES}


def test_fast_paths_embed_like_the_plain_one(fast, plain, images):
    name, enc = fast
    pairs = [(enc.encode_images(images, batch_size=4), plain.encode_images(images)),  # batches of 4, 4 and 3
             (enc.encode_images(images[:1]), plain.encode_images(images[:1])),  # a batch of one: a query
             (enc.encode_texts(TEXTS, batch_size=3), plain.encode_texts(TEXTS)),
             (enc.encode_texts(TEXTS[:1]), plain.encode_texts(TEXTS[:1]))]
    for got, want in pairs:
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
        assert (got * want).sum(axis=1).min() >= MIN_COSINE[name]
    assert enc.encode_texts([]).shape == (0, 128)
    pixels = torch.stack([enc.prepare(im) for im in images])
    got = enc.encode_pixels(pixels, batch_size=5)
    assert (got * plain.encode_pixels(pixels)).sum(axis=1).min() >= MIN_COSINE[name]


def test_fast_paths_find_the_same_top_k_in_the_built_in_gallery(fast, plain_scores, tmp_path_factory):
    """Every query's top k through the fast path (FAISS over the fast path's own index of the gallery) are the
    plain path's top k, in the same order, except where items' plain scores tie within TIE."""
    name, enc = fast
    engine = _engine(enc, tmp_path_factory.mktemp(name))
    for q in QUERIES:
        scores = plain_scores[q]
        want = sorted(scores, key=scores.get, reverse=True)[:K]
        got = [h.where for h in engine.search(q, k=K)]
        kth = scores[want[-1]]
        assert all(scores[f] >= kth - TIE[name] for f in got), (q, got, want)
        ranks = [scores[f] for f in got]  # the fast path's order, in plain scores: falling, but for ties
        assert all(b <= a + TIE[name] for a, b in zip(ranks, ranks[1:])), (q, got, want)
        if name != "bf16":  # fp32 paths: the very same list wherever the plain path has no near-tie
            gaps = np.diff([scores[f] for f in want])
            if np.all(np.abs(gaps) > TIE[name]) and scores[want[-1]] - sorted(scores.values())[-K - 1] > TIE[name]:
                assert got == want, q


def test_onnx_files_are_cached_and_reused(onnx_model, mbm_cache, monkeypatch):
    folder = onnx_backend.onnx_folder(mbm_cache / "onnx", onnx_model.key)
    files = [folder / name for name in onnx_backend.FILES]
    assert all(f.is_file() and f.stat().st_size > 0 for f in files)
    before = [f.stat().st_mtime_ns for f in files]

    def no_export(*args):
        raise AssertionError("the cached ONNX files should have been reused")
    monkeypatch.setattr(onnx_backend, "export", no_export)
    again = create_model("mbm-shapes", device="cpu", backend="onnx", cache_dir=mbm_cache / "onnx")
    assert [f.stat().st_mtime_ns for f in files] == before
    assert again.backend == "onnx" and again.key == onnx_model.key
    # an Engine configured from the environment finds them under its cache too
    config = EngineConfig.from_env({"MBM_BACKEND": "onnx", "MBM_CACHE": str(mbm_cache)}, model="mbm-shapes",
                                   device="cpu")
    assert config.backend == "onnx"
    engine = Engine(config)
    assert engine.encoder.backend == "onnx" and repr(engine.encoder).endswith("backend=onnx)")
    assert [f.stat().st_mtime_ns for f in files] == before
    np.testing.assert_allclose(engine.encoder.encode_texts(QUERIES), onnx_model.encode_texts(QUERIES), atol=1e-6)


def test_onnx_without_onnxruntime_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(ImportError, match="pip install onnxruntime onnx onnxscript"):
        create_model("mbm-shapes", device="cpu", backend="onnx", cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_settings_that_cannot_be_met_are_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        create_model("mbm-shapes", device="cpu", backend="tensorrt")
    with pytest.raises(ValueError, match="onnx backend runs fp32"):
        create_model("mbm-shapes", device="cpu", backend="onnx", precision="bf16")
    monkeypatch.setattr("mbm.models._device.cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="needs bf16 instructions"):
        create_model("mbm-shapes", device="cpu", precision="bf16")


def test_hooks_see_the_torch_model_and_the_runner_serves_the_rest(onnx_model, plain, images):
    """mbm.trace reads the towers through forward hooks: while they are on, calls run the torch model (so the
    numbers shown are the ones returned); without hooks the ONNX runner serves."""
    from mbm.trace import pipeline_trace
    calls = []
    runner = onnx_model.runner
    counted = type(runner)(image=lambda x: calls.append("image") or runner.image(x),
                           text=lambda t: calls.append("text") or runner.text(t), what=runner.what)
    onnx_model.use_runner(counted, backend="onnx")
    try:
        trace = pipeline_trace(onnx_model, images[0], "a red circle")
        assert calls == []  # the hooked calls went through the torch model
        want = pipeline_trace(plain, images[0], "a red circle")
        assert trace.image_features.shape == want.image_features.shape
        np.testing.assert_allclose(trace.image_features.head, want.image_features.head, atol=1e-4)
        np.testing.assert_allclose(trace.text_embedding, want.text_embedding, atol=1e-5)
        onnx_model.encode_images(images[:2])
        onnx_model.encode_texts(["a blue star"])
        assert calls == ["image", "text"]
    finally:
        onnx_model.use_runner(runner, backend="onnx")


def test_channels_last_is_the_default_for_convolutional_towers_on_the_cpu(shapes_model, plain, images):
    from mbm.fusion import image_features
    assert shapes_model.channels_last and not plain.channels_last
    assert shapes_model.model.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert (shapes_model.image_batch, shapes_model.text_batch) == (64, 256)
    pooled, tokens = image_features(shapes_model, images[:3])  # the torch model used directly, NCHW pixels
    want_pooled, want_tokens = image_features(plain, images[:3])
    torch.testing.assert_close(pooled, want_pooled, atol=1e-4, rtol=0)
    torch.testing.assert_close(tokens, want_tokens, atol=1e-4, rtol=1e-4)
    vit = open_clip.CLIP(embed_dim=16, vision_cfg={"image_size": 224, "layers": 1, "width": 32, "patch_size": 32,
                                                   "head_width": 16},
                         text_cfg={"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1})
    enc = Encoder(vit, shapes_model.preprocess, shapes_model.tokenizer, name="tiny-vit", device="cpu")
    assert not enc.channels_last  # its one convolution cuts the patches: nothing to gain
    assert (enc.image_batch, enc.text_batch) == (16, 32)  # a 224 px tower is compute-bound on the CPU


# Texts of every length the cut meets: "!" is token id 0 (the padding's id), scripts of several bytes a character,
# one past the context length; 2x the batch below, so they are sorted by length into batches and put back in order.
CUT_TEXTS = ["a red circle", "Hello!!! a big blue square!", "!", "ein roter Kreis", "キツネ", "лиса",
             "a " + "very " * 80 + "long caption"] * 3


@pytest.mark.parametrize("path", ["plain", "onnx_model"])
def test_texts_cut_to_their_length_embed_as_the_padded_model_does(path, plain, request):
    """A query costs its own length (issue 19): the towers see token ids cut after the batch's longest text, and
    each text's embedding is the one the model gives it padded to the context length, in the order asked."""
    enc = request.getfixturevalue(path)
    assert enc.short_text and (enc.runner is None or enc.runner.short_text)
    with torch.inference_mode():
        padded = torch.nn.functional.normalize(plain.model.encode_text(plain.tokenizer(CUT_TEXTS)), dim=-1).numpy()
    for got in (enc.encode_texts(CUT_TEXTS, batch_size=len(CUT_TEXTS) // 2),
                np.concatenate([enc.encode_texts([t]) for t in CUT_TEXTS])):
        assert (got * padded).sum(axis=1).min() >= 1 - 1e-5


def test_a_query_runs_on_one_thread_and_gives_the_count_back(plain, monkeypatch):
    """Small text batches run on one CPU thread on a busy machine (as fast or faster there: docs/BENCHMARKS.md,
    issue 19) and on every thread on an idle one; queries from many threads at once leave the process with the
    thread count it had, and big batches keep it."""
    import os
    import threading

    import mbm.models.encoder as encoder_module
    seen, real = [], encoder_module.causal_text

    def spy(model, tokens):
        seen.append((len(tokens), torch.get_num_threads()))
        return real(model, tokens)
    monkeypatch.setattr(encoder_module, "causal_text", spy)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.6, 1.0, 1.0))  # a busy 2-core machine
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        workers = [threading.Thread(target=lambda: [plain.encode_texts(["a red circle"]) for _ in range(20)])
                   for _ in range(6)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=120)
        after_queries = torch.get_num_threads()
        plain.encode_texts(TEXTS)
        monkeypatch.setattr(os, "getloadavg", lambda: (0.3, 1.0, 1.0))  # the same machine, idle
        idle = plain.encode_texts(["a red circle"])
    finally:
        torch.set_num_threads(before)
    assert after_queries == 2
    assert sorted(set(seen[:120])) == [(1, 1)] and len(seen) == 122  # 120 queries, each on one thread
    assert seen[120] == (len(TEXTS), 2)  # a batch of captions keeps both
    assert seen[121] == (1, 2)  # idle: a query takes both, for the same vector
    np.testing.assert_allclose(idle, plain.encode_texts(["a red circle"]), atol=1e-6)
