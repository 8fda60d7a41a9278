"""The Explore and Learn tabs' named endpoints, through gradio_client against a real `python app.py`."""

import re
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """What the app serves, computed by the library: the default model on the built-in gallery. The model's quality
    on its own world is tests/test_explore.py's; here the page must show the library's numbers."""
    from mbm.engine import Engine, EngineConfig
    return Engine(EngineConfig(cache_dir=str(tmp_path_factory.mktemp("served"))))


def test_the_map_draws_every_image_and_caption_and_the_gap_in_numbers(client, served):
    svg, words = client.predict("a red circle", 10, "pca", api_name="/embedding_map")
    n = len(served.gallery.image_matrix()[0])  # its images (the built-in video is searched, not mapped)
    assert svg.count('data-kind="image"') == n and svg.count('data-kind="caption"') == n
    assert svg.count('class="hit"') == 10  # the query's 10 hits are ringed
    assert 'class="query"' in svg and "a red circle" in svg
    matched, random = map(float, re.findall(r"\*\*(-?\d\.\d+)\*\*;.*? (-?\d\.\d+)\. The two", words)[0])
    gap = served.embedding_map().gap
    assert (matched, random) == (round(gap.matched, 3), round(gap.random, 3))
    assert matched > random  # the model pulls an image and its own caption together


def test_the_similarity_matrix_shows_the_models_diagonal(client, served):
    svg, words = client.predict(6, 3, True, api_name="/similarity_matrix")
    assert svg.count('class="cell"') == 36
    hits, n = map(int, re.search(r"\*\*(\d+) of (\d+)\*\*", words).groups())
    assert n == 6 and hits == served.similarity_matrix(6, 3, softmax=True).diagonal_hits
    assert "softmax over each row" in words


def test_approximate_search_reaches_the_exact_top_k_with_every_list_scanned(client):
    *_, knob = client.predict("a blue square", 10, "ivf", 1, api_name="/compare_indexes")
    lists = knob["maximum"]  # about the square root of the gallery's size
    assert 16 <= lists <= 64
    exact, approx, words, knob = client.predict("a blue square", 10, "ivf", lists, api_name="/compare_indexes")
    assert len(exact) == 10 and "recall@10 = 100%" in words and knob["value"] == lists
    assert [t["caption"].split(". ", 1)[1] for t in exact] == [t["caption"].split(". ", 1)[1] for t in approx]
    recalls = []
    for query in ("a blue square", "a red circle", "a green star", "a yellow heart"):
        *_, words, _ = client.predict(query, 10, "ivf", 1, api_name="/compare_indexes")
        recalls.append(int(re.search(r"recall@10 = (\d+)%", words).group(1)))
    assert min(recalls) < 100  # one list of many misses part of the true top-10: the knob matters


def test_the_prompt_lab_averages_templates_and_warns_about_cut_prompts(client):
    image = handle_file(str(EXAMPLES / "red-circle.png"))
    long = "a photo of " + "a very very " * 30 + "{}."
    svg, tokens, words = client.predict(image, "red, green, blue", f"a photo of a {{}}.\n{long}",
                                        api_name="/prompt_lab")
    assert "ensemble" in svg and "red" in svg
    rows = tokens["data"]
    assert len(rows) == 6 and rows[0][2].startswith("<start_of_text>") and rows[0][2].endswith("<end_of_text>")
    assert [r[3] for r in rows] == ["", "", "", "cut short", "cut short", "cut short"]
    assert "3 prompts are longer than the model's 48 tokens" in words


def test_the_walkthrough_shows_each_stage_of_the_model(client):
    scene = handle_file(str(EXAMPLES / "scene.png"))  # a large brown circle at the top right, ...
    seen, tokens, features, vectors, colours, answers, note = client.predict(
        scene, "what shape is at the top right?", api_name="/pipeline_trace")
    assert Path(seen).is_file()
    assert [t["token"] for t in tokens][:3] == ["<start_of_text>", "what</w>", "shape</w>"]
    assert vectors.count("<svg") == 2 and "cosine is" in features and colours.count("<rect") == 36
    assert answers["label"].startswith("attention: circle")


@pytest.mark.parametrize("api, args, message", [
    ("/embedding_map", ("  ", 10, "pca"), "Type a query"),
    ("/embedding_map", ("a red circle", 10, "umap"), "pip install umap-learn"),
    ("/compare_indexes", ("", 10, "ivf", 1), "Type a query"),
    ("/compare_indexes", ("a red circle", 10, "ivf", 64), "nprobe"),
    ("/prompt_lab", (None, "a, b", "a {}."), "Drop an image"),
    ("/prompt_lab", ("red-circle.png", "red", "a {}."), "at least two labels"),
    ("/pipeline_trace", (None, "a red circle"), "Drop an image"),
    ("/pipeline_trace", ("scene.png", "  "), "type a text"),
    ("/compare_models", ("a red circle",), "Train your model first"),
    ("/compare_models", (" ",), "Type what to look for"),
    ("/train_live", (5,), r"\(seconds, start-up included\) must be a whole number between 30 and 120, not 5"),
    ("/train_live", (None,), "must be a whole number between 30 and 120, not None"),  # the slider checks first
])
def test_bad_input_to_the_teaching_views_gets_a_clear_message(client, api, args, message):
    args = [handle_file(str(EXAMPLES / a)) if isinstance(a, str) and a.endswith(".png") else a for a in args]
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name=api)


def test_a_visitor_trains_a_model_and_searches_the_gallery_with_it(client):
    status, curve, snapshot = client.predict(30, api_name="/train_live")
    assert "done" in status and "<polyline" in curve and 'class="cell"' in snapshot
    assert re.search(r"R@5 \*\*\d+%\*\*", status)
    shipped, yours = client.predict("a red circle", api_name="/compare_models")
    assert len(shipped) == 8 and len(yours) == 8
    assert "red circle" in shipped[0]["caption"]
