"""The drawing pad in a real browser: headless Chromium writes a letter of the test split
stroke by stroke with pointer events, the page must show what the API reads for the same
picture, with the network's input, every feature map and the scores; a photo upload must
show the text the API reads.

Needs Debian's chromium and chromium-driver and selenium (the dev extra). Without them the
tests skip; CI installs them and sets MICROCONV_REQUIRE_BROWSER=1, which makes that a failure.
No driver or browser is ever downloaded: selenium gets the system chromedriver's path.
"""

import base64
import shutil

import numpy as np
import pytest
from optional import REQUIRE_BROWSER, skip_unless_required
from servetools import (  # noqa: F401 - module_pad_server is the pad_server fixture
    TEXT,
    module_pad_server,
    request,
    sample_letter,
    strokes_of,
    text_photo,
)

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WAIT_S = 120                    # generous: CI machines are slow and shared


def browser_or_skip():
    """(chromium, chromedriver) paths, or a skip saying what is missing (a failure in CI)."""
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append('selenium (pip install -e ".[dev]")')
    chromium = next(filter(None, map(shutil.which, BROWSERS)), None)
    if chromium is None:
        missing.append("chromium (apt-get install chromium)")
    chromedriver = shutil.which("chromedriver")
    if chromedriver is None:
        missing.append("chromedriver (apt-get install chromium-driver)")
    if missing:
        skip_unless_required(REQUIRE_BROWSER, "browser tests need " + ", ".join(missing))
    return chromium, chromedriver


@pytest.fixture(scope="module")
def browser():
    chromium, chromedriver = browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1100,1400"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium then never looks for (or downloads) a driver itself.
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, pad_server):
    browser.get(pad_server[0])
    wait(browser, lambda d: d.execute_script("return letterNames.length") == 26)
    yield browser
    # no script errors (the network log holds the 4xx answers to the first strokes drawn:
    # too little ink to be a letter yet)
    errors = [entry for entry in browser.get_log("browser")
              if entry["level"] == "SEVERE" and entry["source"] != "network"]
    assert errors == [], errors


def wait(driver, condition):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, WAIT_S).until(condition)


def draw(driver, strokes, kind="pen"):
    """Draw strokes (in pad pixels) on the pad with a pointer of the given kind: pointer down,
    moves, pointer up, as a person would."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By

    pad = driver.find_element(By.ID, "pad")
    side = pad.rect["width"]
    scale = side / driver.execute_script("return arguments[0].width", pad)

    def offset(point):             # W3C actions place the pointer relative to the centre
        return round(point[0] * scale - side / 2), round(point[1] * scale - side / 2)

    actions = ActionBuilder(driver, mouse=PointerInput(kind, kind), duration=0)
    for first, *rest in strokes:
        actions.pointer_action.move_to(pad, *offset(first)).pointer_down()
        for point in rest:
            actions.pointer_action.move_to(pad, *offset(point))
        actions.pointer_action.pointer_up()
    actions.perform()


def shown_answer(driver, strokes):
    """The answer the page shows once it has read all ``strokes`` strokes."""
    from selenium.webdriver.common.by import By

    answer = driver.find_element(By.ID, "answer")
    wait(driver, lambda d: answer.get_attribute("data-strokes") == str(strokes))
    return answer.get_attribute("data-letter"), driver.find_elements(By.CSS_SELECTOR, "#top3 li")


def test_a_letter_written_stroke_by_stroke_is_shown_as_the_api_reads_it(page, pad_server,
                                                                        tmp_path):
    from selenium.webdriver.common.by import By

    url, _, trained = pad_server
    image, letter = sample_letter()
    strokes = strokes_of(image)
    draw(page, strokes)
    shown, rows = shown_answer(page, len(strokes))
    # the API, given the very picture on the pad, reads the same
    picture = base64.b64decode(page.execute_script(
        "return document.getElementById('pad').toDataURL('image/png').split(',')[1]"))
    status, answer = request(url + "api/letter", "POST", picture, "image/png")
    assert status == 200, answer
    assert shown == answer["letter"]
    if trained:
        assert shown == letter
    assert [row.get_attribute("data-letter") for row in rows] == [x for x, _ in answer["top3"]]
    assert [row.find_element(By.CLASS_NAME, "share").text for row in rows] == [
        f"{100 * p:.1f} %" for _, p in answer["top3"]]
    # the network's input, drawn in grey scaled to its range
    grey = np.array(page.execute_script(
        "const c = document.getElementById('input');"
        "return Array.from(c.getContext('2d').getImageData(0, 0, 28, 28).data)"
        ".filter((_, i) => i % 4 === 0);")).reshape(28, 28)
    seen = np.array(answer["input"])
    expected = np.round(255 * (seen - seen.min()) / np.ptp(seen))
    assert np.abs(grey - expected).max() <= 1
    # one tile per channel of every block, and one bar per score
    blocks = page.find_elements(By.CSS_SELECTOR, "#blocks .tiles")
    assert [(b.get_attribute("data-size"), len(b.find_elements(By.TAG_NAME, "canvas")))
            for b in blocks] == [("13", 32), ("6", 64), ("2", 128)]
    assert all(tile.is_displayed() for tile in blocks[0].find_elements(By.TAG_NAME, "canvas"))
    bars = page.find_elements(By.CSS_SELECTOR, "#scores .score")
    assert len(bars) == 26
    assert [b.text for b in bars if "best" in b.get_attribute("class")] == [answer["letter"]]
    screenshot = tmp_path / "serve-pad.png"
    assert page.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot} (wrote {letter}, read {shown})")


def test_touch_and_mouse_draw_too_and_clear_empties_the_pad(page, pad_server):
    from selenium.webdriver.common.by import By

    draw(page, [[(70, 40), (70, 220)]], kind="touch")
    draw(page, [[(70, 130), (190, 130)], [(190, 40), (190, 220)]], kind="mouse")
    shown, rows = shown_answer(page, 3)
    assert shown and len(rows) == 3
    page.find_element(By.ID, "clear").click()
    assert page.find_element(By.ID, "answer").get_attribute("data-strokes") == "0"
    assert page.find_elements(By.CSS_SELECTOR, "#top3 li") == []
    picture = base64.b64decode(page.execute_script(
        "return document.getElementById('pad').toDataURL('image/png').split(',')[1]"))
    assert request(pad_server[0] + "api/letter", "POST", picture, "image/png")[0] == 422   # blank


def test_an_uploaded_photo_shows_the_text_the_api_reads(page, pad_server, tmp_path):
    from selenium.webdriver.common.by import By

    url, _, trained = pad_server
    photo = tmp_path / "text.png"
    photo.write_bytes(text_photo(TEXT))
    page.find_element(By.ID, "tab-photo").click()
    assert page.find_element(By.ID, "photo").is_displayed()
    assert not page.find_element(By.ID, "write").is_displayed()
    page.find_element(By.ID, "photo-file").send_keys(str(photo))
    text = page.find_element(By.ID, "photo-text")
    wait(page, lambda d: text.get_attribute("data-state") in ("done", "error"))
    status, answer = request(url + "api/photo", "POST", photo.read_bytes(), "image/png")
    assert status == 200 and text.get_attribute("data-state") == "done"
    assert text.text == answer["text"]               # its lines and spaces as the API gives them
    assert text.get_attribute("data-letters") == str(len("".join(TEXT.split())))
    if trained:
        assert text.text == TEXT
    view = page.find_element(By.ID, "photo-view")
    assert (int(view.get_attribute("width")), int(view.get_attribute("height"))) == (
        answer["width"], answer["height"])
