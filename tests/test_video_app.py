"""Video on the page, through gradio_client against `python app.py`: a search's best moment played as a clip, the
JSON rows' seconds, videos (and zips of them) uploaded into a visitor's gallery under the session's limits, and
zero-shot over time; every bad input a sentence that says what to do."""

import re
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from mbm import video
from mbm.uploads import Quota, take_uploads

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "assets" / "gallery" / "videos" / "shapes-example.mp4"  # the built-in gallery's video


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """A short cut of the example (6 s), a zip holding it and another cut, and a damaged copy."""
    folder = tmp_path_factory.mktemp("clips")
    short = video.write_example(folder / "first-seconds.mp4", fps=4, size=96, seconds=6)
    other = video.write_example(folder / "later.mp4", fps=4, size=96)
    with zipfile.ZipFile(folder / "videos.zip", "w") as z:
        z.write(other, "trip/later.mp4")
        z.writestr("trip/later.txt", "the shapes, later")
    (folder / "broken.mp4").write_bytes(EXAMPLE.read_bytes()[:300])
    return {"short": short, "zip": folder / "videos.zip", "broken": folder / "broken.mp4"}


RED_CIRCLE = ((1.0, 5.0), (10.0, 14.0))  # the example's script: when the red circle is on screen


def _on_script(span) -> bool:
    """A moment found for "a red circle" overlaps one of the script's spans by at least half (IoU >= 0.5, as
    benchmarks/bench_moments.py counts)."""
    return max(video.iou(span, truth) for truth in RED_CIRCLE) >= 0.5


def test_a_search_shows_the_moment_and_plays_a_clip_cut_around_it(client):
    tiles, _, timing, _ = client.predict("a red circle", None, 1.0, 6, 0.0, api_name="/search")
    moments = [t["caption"] for t in tiles if "▶" in t["caption"]]
    spans = [(int(a) * 60 + int(b), int(c) * 60 + int(d)) for m in moments
             for a, b, c, d in re.findall(r"▶ (\d+):(\d+)-(\d+):(\d+)", m)]
    assert spans and all(_on_script(span) for span in spans), moments
    assert "images (text query) in" in timing and "15 video frames" in timing
    player, line = client.predict(api_name="/search_moment")
    clip = Path(player["value"])
    info = video.probe(clip)
    assert 5.0 <= info.duration <= 7.0 and max(info.width, info.height) <= 360  # the 4 s moment and a second each side
    assert "videos/shapes-example.mp4@00:" in line and "plays from" in line


def test_json_rows_carry_the_seconds_of_a_moment(client):
    rows = client.predict("a red circle", 10, -1.0, api_name="/search_items")
    spans = sorted((r["start"], r["end"]) for r in rows if r["start"] is not None)
    assert len(spans) == 2 and all(_on_script(span) for span in spans), spans  # both appearances of the red circle
    assert all(r["end"] is None for r in rows if r["start"] is None)


def test_a_search_without_a_video_hides_the_player(client, tmp_path):
    from mbm.data.shapes import make_scene, render
    render(make_scene("test", 9), 96).save(tmp_path / "one.png")
    client.predict([handle_file(str(tmp_path / "one.png"))], api_name="/index_uploads")
    client.predict("a shape", None, 1.0, 3, -0.2, api_name="/search")
    player, line = client.predict(api_name="/search_moment")
    assert player["visible"] is False and line == ""


def test_videos_and_zips_of_them_become_a_searchable_gallery(client, clips):
    info, summary, skipped = client.predict([handle_file(str(clips["short"])), handle_file(str(clips["zip"])),
                                             handle_file(str(clips["broken"]))], api_name="/index_uploads")
    assert "3 videos added with 1 caption" in summary and "frames of 3 videos" in summary
    assert "**2** searchable images and videos" in summary and "your uploads" in info
    assert [row[0] for row in skipped["value"]["data"]] == ["broken.mp4"]
    rows = [t["caption"] for t in client.predict("a blue square", None, 1.0, 5, -0.2, api_name="/search")[0]]
    assert any("▶ 00:03-00:06" in c for c in rows) and any("▶ 00:03-00:09 · the shapes, later" in c for c in rows)


def test_an_upload_of_only_a_damaged_video_says_what_to_do(server, clips):
    visitor = Client(server.url, verbose=False)
    with pytest.raises(AppError, match="None of the 1 files could be read: broken.mp4.*Upload .*MP4"):
        visitor.predict([handle_file(str(clips["broken"]))], api_name="/index_uploads")


def test_videos_count_against_the_session_quota(tmp_path, clips):
    """The same books as images: a zip of videos stops at the visitor's quota, the rest named with the reason."""
    size = clips["short"].stat().st_size
    with zipfile.ZipFile(tmp_path / "many.zip", "w") as z:
        for i in range(4):
            z.write(clips["short"], f"clip{i}.mp4")
    intake = take_uploads([tmp_path / "many.zip"], tmp_path / "mine", quota=Quota(max_bytes=int(2.5 * size)))
    assert len(intake.added) == 2 and intake.summary() == "0 images and 2 videos added, 2 skipped"
    assert all("quota" in why for _, why in intake.skipped)


def test_zero_shot_over_time_sees_the_circle_enter_and_leave(client):
    chart, table, note = client.predict(handle_file(str(EXAMPLE)), "circle, square, star, triangle", "a {}.",
                                        api_name="/classify_video")
    data = table["value"]["data"]
    assert table["value"]["headers"] == ["seconds", "circle", "square", "star", "triangle"] and len(data) == 15
    circle = {row[0]: row[1] for row in data}
    assert circle[1.0] > 0.5 and circle[12.0] > 0.5 and circle[0.0] < 0.5 and circle[6.0] < 0.5
    assert data[9][3] > 0.5  # the star, alone on screen at 9 s
    assert chart.count('class="label"') == 4 and "15 frames" in note


@pytest.mark.parametrize("which, labels, message", [
    (None, "circle, star", "Drop a video first"),
    ("text", "circle, star", "is not a video FFmpeg can read.*Try an MP4"),
    ("example", "circle", "at least two labels"),
])
def test_bad_input_to_zero_shot_over_time_says_what_to_do(client, tmp_path, which, labels, message):
    (tmp_path / "notes.mp4").write_text("not a video")
    file = {None: None, "text": handle_file(str(tmp_path / "notes.mp4")), "example": handle_file(str(EXAMPLE))}[which]
    with pytest.raises(AppError, match=message):
        client.predict(file, labels, "a {}.", api_name="/classify_video")


def test_in_the_browser_clicking_a_moment_plays_it_and_keeps_the_results(server):
    """A person's click on the second moment's tile: the player cuts that moment; the results stay as they were."""
    from playwright.sync_api import expect, sync_playwright
    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=flags)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(server.url)
        page.get_by_label("Text", exact=True).fill("a red circle")
        page.get_by_role("button", name="Search", exact=True).click()
        line = page.locator("#moment-line")
        expect(line).to_contain_text("shapes-example.mp4@00:", timeout=30_000)
        first = line.inner_text()
        tiles = page.locator("#results .caption-label")
        captions = tiles.all_inner_texts()
        second = [i for i, c in enumerate(captions) if "▶" in c][1]
        page.locator("#results img").nth(second).click()
        span = captions[second].split("▶ ")[1].split(" ·")[0]
        expect(line).to_contain_text(f"@{span}", timeout=30_000)
        assert span not in first and tiles.all_inner_texts() == captions
        expect(page.locator("#moment-video video")).to_be_visible()
        browser.close()
    assert errors == []
