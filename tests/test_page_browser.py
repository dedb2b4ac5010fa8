"""GET / in a real headless browser: Debian's chromium, driven by Playwright, against the real server on
127.0.0.1 with the tiny (untrained) model. Choose a photo, and the page draws the keypoints over it and warns
that the model is untrained.

Needs /usr/bin/chromium and the `playwright` Python package (.ci/install-test-tools.sh installs both; Playwright's
own browser download is never used).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import DATA, jpeg_bytes
from tests.live_server import LiveServer

pytestmark = pytest.mark.integration  # a real browser against a real server process

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PHOTO = DATA / "coco-mini" / "000000000785.jpg"


@pytest.fixture
def browser_page(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing: run .ci/install-test-tools.sh (Debian package 'chromium')")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="the playwright package is missing: pip install -e '.[dev]'")
    profile = tmp_path / "chromium-profile"  # a fresh --user-data-dir for every test
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000}, device_scale_factor=1,
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
    shutil.rmtree(profile, ignore_errors=True)


def photo_file(tmp_path: Path) -> Path:
    if PHOTO.is_file():
        return PHOTO
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(480, 360, seed=42))
    return path


def is_keypoint_red(pixel) -> bool:
    r, g, b = pixel[:3]
    return r > 200 and g < 110 and b < 110  # the page draws keypoints in #f33


def test_page_draws_keypoints_and_warns_about_the_untrained_model(tiny_onnx, browser_page, tmp_path):
    page = browser_page
    photo = photo_file(tmp_path)
    original = np.asarray(Image.open(photo).convert("RGB"))
    console_errors: list[str] = []
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: console_errors.append(str(error)))

    with LiveServer(tiny_onnx) as server:
        page.goto(f"{server.base_url}/")
        warning = page.locator("#warning")
        warning.wait_for(state="visible", timeout=15_000)
        assert "UNTRAINED" in warning.inner_text()

        with page.expect_response(lambda r: r.url.endswith("/v1/pose") and r.request.method == "POST",
                                  timeout=30_000) as pose_call:
            page.set_input_files("#file", str(photo))
        response = pose_call.value
        assert response.status == 200, response.text()
        result = response.json()
        page.wait_for_function(
            "Number(document.getElementById('canvas').dataset.keypointsDrawn) > 0", timeout=30_000)

        drawn = int(page.locator("#canvas").get_attribute("data-keypoints-drawn"))
        summary = page.locator("#summary").inner_text()
        assert page.locator("#error").inner_text() == ""
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        canvas_png = page.locator("#canvas").screenshot(path=str(tmp_path / "canvas.png"))
        # the canvas' own pixels, exactly (no page scaling, no border)
        size = page.evaluate("[document.getElementById('canvas').width, document.getElementById('canvas').height]")

        keypoints = [(k["x"], k["y"]) for person in result["persons"] for k in person["keypoints"] if k["score"] > 0]
        inside = [(x, y) for x, y in keypoints if 3 <= x < size[0] - 3 and 3 <= y < size[1] - 3]
        canvas_pixels = page.evaluate(
            """(points) => {
                 const ctx = document.getElementById('canvas').getContext('2d');
                 return points.map(([x, y]) => Array.from(ctx.getImageData(Math.round(x), Math.round(y), 1, 1).data));
               }""",
            inside,
        )

    assert result["model"]["trained"] is False
    assert size == [original.shape[1], original.shape[0]] == [result["image"]["width"], result["image"]["height"]]
    assert drawn == len(keypoints) > 0
    assert f"{drawn} keypoints drawn" in summary and "UNTRAINED" in summary
    assert (tmp_path / "page.png").stat().st_size > 0

    # where a keypoint was drawn, the canvas is keypoint-red and the photo was not
    assert inside, "no keypoint fell inside the image"
    changed = [(x, y) for (x, y), pixel in zip(inside, canvas_pixels, strict=True)
               if is_keypoint_red(pixel) and not is_keypoint_red(original[round(y), round(x)])]
    assert changed, list(zip(inside, canvas_pixels, strict=True))[:5]

    # and the screenshot shows it too (the element screenshot is the canvas at 1:1, inside a 1 px border)
    shot = np.asarray(Image.open(io.BytesIO(canvas_png)).convert("RGB"))
    scale_x = (shot.shape[1] - 2) / size[0]
    x, y = changed[0]
    window = shot[max(0, round(y * scale_x) + 1 - 2): round(y * scale_x) + 1 + 3,
                  max(0, round(x * scale_x) + 1 - 2): round(x * scale_x) + 1 + 3]
    assert any(is_keypoint_red(p) for p in window.reshape(-1, 3)), window
    assert console_errors == [], console_errors


def is_box_green(pixel) -> bool:
    r, g, b = pixel[:3]
    return g > 170 and r < 110 and b < 110  # the page draws boxes in #3c3


def test_page_draws_every_detected_person_with_their_box(tiny_onnx, browser_page, tmp_path):
    """With a person detector, a bare photo comes back with every person found, and the page draws each box."""
    from tests.detector_model import build_scene_detector

    page = browser_page
    photo = photo_file(tmp_path)
    width, height = Image.open(photo).size
    detector, scene = build_scene_detector(tmp_path / "scene.onnx", (width, height))
    with LiveServer(tiny_onnx, env={"POSE_DETECTOR_PATH": str(detector)}) as server:
        page.goto(f"{server.base_url}/")
        page.wait_for_function("document.getElementById('intro').textContent.includes('detector')", timeout=15_000)
        with page.expect_response(lambda r: r.url.endswith("/v1/pose") and r.request.method == "POST",
                                  timeout=30_000) as pose_call:
            page.set_input_files("#file", str(photo))
        result = pose_call.value.json()
        page.wait_for_function("document.getElementById('canvas').dataset.persons === '2'", timeout=30_000)
        # around the middle of each box's top edge (the 2 px line is anti-aliased over fractional coordinates)
        tops = [(x + w / 2, y + dy) for x, y, w, _h, _score in scene.persons for dy in (-1, 0, 1)]
        pixels = page.evaluate(
            """(points) => {
                 const ctx = document.getElementById('canvas').getContext('2d');
                 return points.map(([x, y]) => Array.from(ctx.getImageData(Math.round(x), Math.round(y), 1, 1).data));
               }""",
            tops,
        )
    assert len(result["persons"]) == len(scene.persons) == 2
    np.testing.assert_allclose([[*p["box"], p["box_score"]] for p in result["persons"]], scene.persons, atol=1e-3)
    assert all(any(is_box_green(p) for p in pixels[i:i + 3]) for i in range(0, len(pixels), 3)), pixels


def test_with_api_keys_the_page_asks_for_one_and_its_calls_work(tiny_onnx, browser_page, tmp_path):
    """With POSE_API_KEYS set the page loaded but its own calls got 401 (issue 18, point 10): it now asks for a key
    and sends it (X-API-Key) with every call."""
    page = browser_page
    with LiveServer(tiny_onnx, env={"POSE_API_KEYS": "page-test-key"}) as server:
        page.goto(f"{server.base_url}/")
        page.locator("#apikey").wait_for(state="visible", timeout=15_000)
        assert "API key" in page.locator("#error").inner_text()
        page.fill("#apikey", "page-test-key")
        page.click("#usekey")
        page.locator("#warning").wait_for(state="visible", timeout=15_000)  # /v1/model answered with the key
        with page.expect_response(lambda r: r.url.endswith("/v1/pose") and r.request.method == "POST",
                                  timeout=30_000) as pose_call:
            page.set_input_files("#file", str(photo_file(tmp_path)))
        assert pose_call.value.status == 200, pose_call.value.text()
        page.wait_for_function("Number(document.getElementById('canvas').dataset.keypointsDrawn) > 0",
                               timeout=30_000)
        assert page.locator("#error").inner_text() == ""


def test_the_video_tab_plays_the_video_with_the_tracked_skeletons_drawn(browser_page, tmp_path):
    """The video tab streams /v1/pose/video's NDJSON and draws each shown frame's people with their track IDs."""
    from tests.detector_model import build_scene_detector
    from tests.video_helpers import encode_video, figure_frames

    page = browser_page
    console_errors: list[str] = []
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: console_errors.append(str(error)))
    width, height = 320, 240
    video = tmp_path / "walk.webm"
    video.write_bytes(encode_video(figure_frames(20, width, height, people=2), "webm-vp9"))
    detector, scene = build_scene_detector(tmp_path / "scene.onnx", (width, height))
    tiny = Path(__file__).parent / "models" / "tiny_coco_mini_128x96.onnx"
    with LiveServer(tiny, env={"POSE_DETECTOR_PATH": str(detector)}) as server:
        page.goto(f"{server.base_url}/")
        page.click("#videotab-button")
        with page.expect_response(lambda r: r.url.endswith("/v1/pose/video") and r.request.method == "POST",
                                  timeout=30_000) as video_call:
            page.set_input_files("#videofile", str(video))
        assert video_call.value.status == 200
        page.wait_for_function("document.getElementById('videocanvas').dataset.frames === '20'", timeout=60_000)
        page.wait_for_function("document.getElementById('videocanvas').dataset.tracksDrawn === '1,2'",
                               timeout=30_000)
        summary = page.locator("#videosummary").inner_text()
        error = page.locator("#error").inner_text()
        tops = [(x + w / 2, y + dy) for x, y, w, _h, _score in scene.persons for dy in (-1, 0, 1)]
        pixels = page.evaluate(
            """(points) => {
                 const ctx = document.getElementById('videocanvas').getContext('2d');
                 return points.map(([x, y]) => Array.from(ctx.getImageData(Math.round(x), Math.round(y), 1, 1).data));
               }""",
            tops,
        )
        page.screenshot(path=str(tmp_path / "video-tab.png"), full_page=True)
    assert "20 frames, 2 track(s)" in summary and error == ""
    # each detected person's box is drawn over the playing video
    assert all(any(is_box_green(p) for p in pixels[i:i + 3]) for i in range(0, len(pixels), 3)), pixels
    assert console_errors == [], console_errors
