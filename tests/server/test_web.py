"""The web chat page at `/`, in a real headless Chromium (Debian's package) driven by Selenium, against live uvicorn.

Skips, saying why, where no Chromium and chromedriver are installed (`.ci/run` installs them where it can).
Screenshots go to $RIPOSTE_TEST_ARTIFACTS, else test-artifacts/ at the repo root.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from markov import MarkovConfig, MarkovModel
from markov.replies import RepliesConfig, ReplyWords
from server.api import web
from server.app import Settings, create_app
from server.engine import Engine, EngineConfig
from tests.server.conftest import FakeIndex, OverlapScorer, serve_in_thread, tiny_lines

ROOT = Path(__file__).resolve().parents[2]
NO_BROWSER = "no headless Chromium: install Debian's chromium and chromium-driver (.ci/run does)"
KEY = "sekrit-key"
WAIT_S = 15  # generous: the machine may be busy; the waits end as soon as the page is right


def artifacts_dir() -> Path:
    """Where screenshots go."""
    path = Path(os.environ.get("RIPOSTE_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module; Selenium is pointed at Debian's chromedriver (no Selenium Manager)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip(NO_BROWSER)
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,860", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    except WebDriverException as exc:
        pytest.skip(f"{NO_BROWSER} (it is installed but did not start: {str(exc.msg).splitlines()[0]})")
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def web_engine(tiny_markov):
    """Two personas that are different models, so a simulation's 'everyone' is both of them."""
    pirate = MarkovModel.build([(line, 1.0) for line in tiny_lines()[::3]], MarkovConfig(order=1))
    # the pirate answers pizza with coffee and music: its turns after a statement are written around those
    pirate.replies = ReplyWords.build([("i like pizza", "coffee then music")] * 3 + [("the park", "dogs")] * 3,
                                      RepliesConfig(min_lift=1.0))
    index = FakeIndex(["i like dogs and my dogs like you", "dogs dogs dogs", "coffee on sundays."])
    eng = Engine({"default": tiny_markov, "pirate": pirate}, OverlapScorer(),
                 EngineConfig(n_candidates=256, seed_replies="statements"),
                 indexes={"default": index})  # default's turns show the index chips; pirate's, none
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def live(web_engine):
    with serve_in_thread(create_app(Settings(budget_ms=2000), engine=web_engine)) as base:
        yield base


# ---------------------------------------------------------------------------------------------------- helpers


def by_css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def one(driver, selector: str):
    found = by_css(driver, selector)
    assert len(found) == 1, f"{selector}: {len(found)} elements"
    return found[0]


def wait_for(driver, condition, what: str):
    """Wait until condition(driver) is truthy; fail naming `what` and showing the log and status otherwise."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(condition)
    except TimeoutException:
        status = by_css(driver, "#status")
        log = by_css(driver, "#log")
        pytest.fail(f"timed out waiting for {what}; status: {status[0].text if status else '?'!r}; "
                    f"log: {log[0].text if log else '?'!r}")


def open_ready(driver, base: str) -> None:
    """Load the page and wait until it says the server is ready and has listed the personas."""
    driver.get(f"{base}/")
    wait_for(driver, lambda d: one(d, "#status").get_attribute("data-state") == "ready", "the ready status")
    wait_for(driver, lambda d: len(by_css(d, "#persona option")) == 2, "the persona list")


def set_value(driver, selector: str, value: str) -> None:
    field = one(driver, selector)
    field.clear()
    if value:
        field.send_keys(value)


def settled_entries(driver) -> list:
    """Replies and errors in the log that are no longer pending."""
    return by_css(driver, "#log .entry.bot:not(.pending), #log .entry.error")


def say(driver, text: str):
    """Type a message, send it, and return the entry that answers it (a reply, or an error)."""
    before = len(settled_entries(driver))
    wait_for(driver, lambda d: one(d, "#send").is_enabled(), "the send button to be enabled")
    one(driver, "#message").send_keys(text)
    one(driver, "#send").click()
    wait_for(driver, lambda d: len(settled_entries(d)) > before, f"an answer to {text!r}")
    return settled_entries(driver)[-1]


def stats_of(entry) -> dict[str, str]:
    """The stats chips of a log entry, by name (their exact values, as the page got them)."""
    return {chip.get_attribute("data-stat"): chip.get_attribute("data-value") for chip in by_css(entry, ".stat")}


def js_errors(driver) -> list[str]:
    """Severe console messages other than the browser's own line for an HTTP error status."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]


def screenshot(driver, name: str) -> Path:
    path = artifacts_dir() / name
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    print(f"screenshot: {path}")
    return path


# ---------------------------------------------------------------------------------------------------- tests


def test_page_and_assets_are_served_with_the_limits(live):
    page = httpx.get(f"{live}/")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-cache"
    assert "{{" not in page.text and 'min="10" max="30000"' in page.text
    assert httpx.get(f"{live}/static/app.js").headers["content-type"].split(";")[0] in (
        "text/javascript", "application/javascript")
    assert httpx.get(f"{live}/static/style.css").status_code == 200
    assert httpx.get(f"{live}/static/..%2Fapi%2Fweb.py").status_code == 404
    assert httpx.get(f"{live}/static/index.html").status_code == 404  # only through `/`, with its limits filled in


def test_chat_shows_the_reply_its_runners_up_and_stats(browser, live):
    open_ready(browser, live)
    assert [o.get_attribute("value") for o in by_css(browser, "#persona option")] == ["default", "pirate"]
    assert one(browser, "#persona").get_attribute("value") == "default"
    set_value(browser, "#budget", "5000")  # ample: the tiny engine reads every candidate, so the turn is reproducible
    one(browser, "#more-summary").click()
    set_value(browser, "#seed", "7")
    answer = say(browser, "do you like dogs?")

    expected = httpx.post(f"{live}/reply", timeout=10, json={
        "history": [{"speaker": "user", "text": "do you like dogs?"}], "persona": "default", "budget_ms": 5000,
        "seed": 7, "n_alternatives": 5, "topic": None,
    }).json()
    assert expected["reply"] and len(expected["alternatives"]) == 5
    assert "bot" in answer.get_attribute("class").split(), answer.text
    assert answer.get_attribute("data-persona") == "default"
    assert one(answer, ".text").text == expected["reply"]
    assert one(answer, ".score").text == f"score {expected['score']:.3f}"

    # The runners-up: collapsed at first, in the order and with the scores /reply gives.
    runners_up = one(answer, "details.runners-up")
    assert runners_up.get_attribute("open") is None and one(answer, "summary").text == "5 runners-up"
    one(answer, "summary").click()
    assert [t.text for t in by_css(answer, ".alt-text")] == [a["text"] for a in expected["alternatives"]]
    assert [float(s.get_attribute("data-value")) for s in by_css(answer, ".alt-score")] == pytest.approx(
        [a["score"] for a in expected["alternatives"]], rel=1e-6)

    stats = stats_of(answer)
    for name in ("generated", "unique", "filtered", "scored", "budget_ms"):
        assert float(stats[name]) == expected["stats"][name], name
    assert stats["timed_out"] == str(expected["stats"]["timed_out"]).lower()
    # Part of the candidates were written around the context's words, and the chip names them.
    seeded = expected["stats"]["seeded"]
    assert seeded["source"] == "context" and seeded["candidates"] > 0 and stats["seeded"] == " ".join(seeded["words"])
    assert f"{seeded['candidates']} around {', '.join(seeded['words'])}" in answer.text
    # The funnel says what the reply index brought and where the reply came from.
    assert int(stats["from_index"]) == expected["stats"]["sources"]["index"] == 3
    assert stats["source"] == expected["stats"]["source"] == "index" and "reply from the index" in answer.text
    live_kept = int(stats["filtered"]) - int(stats["from_index"])  # the kept candidates the writer made this turn
    assert 0 < int(stats["scored"]) <= int(stats["filtered"]) and live_kept <= int(stats["unique"]) <= int(stats["generated"])
    assert float(stats["elapsed_ms"]) <= 5000
    assert "scored by the editor" in answer.text and "generated" in answer.text
    assert one(browser, "#message").get_attribute("value") == ""
    assert js_errors(browser) == []
    screenshot(browser, "web-chat.png")


def test_the_next_turn_uses_the_new_budget_persona_and_topic(browser, live):
    open_ready(browser, live)
    first = say(browser, "do you like pizza?")
    assert float(stats_of(first)["budget_ms"]) == 2000  # the server's default: the budget field starts empty
    set_value(browser, "#budget", "1234")
    from selenium.webdriver.support.ui import Select

    Select(one(browser, "#persona")).select_by_value("pirate")
    set_value(browser, "#topic", "coffee")
    second = say(browser, "and what about music?")
    assert second.get_attribute("data-persona") == "pirate"
    assert float(stats_of(second)["budget_ms"]) == 1234
    assert one(second, ".text").text
    assert len(by_css(browser, "#log .entry.user")) == 2


def test_a_turn_written_around_reply_words_says_which_and_what_they_answer(browser, live):
    open_ready(browser, live)
    from selenium.webdriver.support.ui import Select

    Select(one(browser, "#persona")).select_by_value("pirate")
    answer = say(browser, "i really like pizza.")
    chip = next(c for c in by_css(answer, ".stat") if c.get_attribute("data-stat") == "seeded")
    assert one(chip, ".key").text == "replies" and chip.get_attribute("data-value") == "coffee music"
    # "really" is a seed word too, but the table answers only pizza and like ("i like pizza"): the chip names those
    assert "around coffee, music (answering pizza, like)" in chip.text, chip.text
    Select(one(browser, "#persona")).select_by_value("default")


def test_an_api_error_is_shown_and_the_message_kept(browser, live):
    open_ready(browser, live)
    set_value(browser, "#budget", "5")  # below MIN_BUDGET_MS: the API's 422 must reach the page
    answer = say(browser, "hello there")
    assert "error" in answer.get_attribute("class").split()
    assert "422" in answer.text and "budget_ms" in answer.text and "10" in answer.text, answer.text
    assert one(browser, "#message").get_attribute("value") == "hello there"  # back in the composer to resend
    assert one(browser, "#send").is_enabled()
    set_value(browser, "#budget", "")
    set_value(browser, "#message", "")
    retried = say(browser, "hello there")
    assert "bot" in retried.get_attribute("class").split() and one(retried, ".text").text


def test_simulate_three_turns_then_reset(browser, live):
    open_ready(browser, live)
    say(browser, "do we like old movies?")
    set_value(browser, "#sim-turns", "3")
    set_value(browser, "#budget", "300")
    one(browser, "#simulate").click()
    wait_for(browser, lambda d: len(by_css(d, "#log .entry.sim")) == 3 or by_css(d, "#log .entry.error"),
             "three simulated turns")
    lines = by_css(browser, "#log .entry.sim")
    assert len(lines) == 3, browser.find_element("css selector", "#log").text
    assert [line.get_attribute("data-persona") for line in lines] in (
        ["default", "pirate", "default"], ["pirate", "default", "pirate"])
    for line in lines:
        assert one(line, ".text").text
        stats = stats_of(line)
        assert int(stats["scored"]) > 0 and float(stats["elapsed_ms"]) > 0 and stats["timed_out"] in ("true", "false")
    assert "3 simulated turns" in by_css(browser, "#log .entry.note")[-1].text
    screenshot(browser, "web-simulate.png")
    browser.set_window_size(420, 860)
    try:
        screenshot(browser, "web-chat-narrow.png")
        assert one(browser, "#send").is_displayed() and one(browser, "#simulate").is_displayed()
    finally:
        browser.set_window_size(1200, 860)

    one(browser, "#reset").click()
    assert by_css(browser, "#log > li") == []
    assert one(browser, "#empty").is_displayed()
    # The next turn starts afresh: only its own line and reply are in the log.
    say(browser, "hi")
    assert len(by_css(browser, "#log > li")) == 2
    assert js_errors(browser) == []


def test_not_ready_says_so_and_disables_sending(browser, tmp_path):
    with serve_in_thread(create_app(Settings(model_dir=tmp_path / "empty"))) as base:
        assert httpx.get(f"{base}/health").status_code == 503
        browser.get(f"{base}/")
        wait_for(browser, lambda d: one(d, "#status").get_attribute("data-state") in ("loading", "error"),
                 "the not-ready status")
        status = one(browser, "#status")
        assert "loading" in status.text or "failed" in status.text, status.text
        assert not one(browser, "#send").is_enabled() and not one(browser, "#simulate").is_enabled()
        one(browser, "#message").send_keys("anyone there?\n")
        assert by_css(browser, "#log > li") == []
        screenshot(browser, "web-not-ready.png")


def test_build_progress_is_shown_while_building(browser):
    app = FastAPI()
    app.include_router(web.router)

    @app.get("/health")
    async def health():
        return JSONResponse({"status": "building", "detail": None,
                             "build": {"stage": "markov chains", "done": 3, "total": 10, "elapsed_s": 12.5}},
                            status_code=503)

    with serve_in_thread(app) as base:
        browser.get(f"{base}/")
        wait_for(browser, lambda d: one(d, "#status").get_attribute("data-state") == "loading", "the build status")
        status = one(browser, "#status")
        assert "building" in status.text and "markov chains" in status.text and "3/10" in status.text, status.text
        progress = one(browser, "#status-progress")
        assert progress.is_displayed()
        assert (progress.get_attribute("value"), progress.get_attribute("max")) == ("3", "10")
        assert not one(browser, "#send").is_enabled()
        screenshot(browser, "web-building.png")


def test_a_401_asks_for_the_key_and_then_sends_it(browser, web_engine):
    with serve_in_thread(create_app(Settings(budget_ms=2000, api_key=KEY), engine=web_engine)) as base:
        browser.get(f"{base}/")
        wait_for(browser, lambda d: one(d, "#auth").is_displayed(), "the API key field")
        assert one(browser, "#status").get_attribute("data-state") == "auth"
        assert not one(browser, "#send").is_enabled()
        one(browser, "#api-key").send_keys(KEY)
        one(browser, "#save-key").click()
        wait_for(browser, lambda d: one(d, "#status").get_attribute("data-state") == "ready", "ready with the key")
        assert browser.execute_script("return localStorage.getItem('riposte.apiKey')") == KEY
        answer = say(browser, "do you like coffee?")
        assert "bot" in answer.get_attribute("class").split() and one(answer, ".text").text

        # A wrong key: the API's 401 message is shown, not a blank failure.
        set_value(browser, "#api-key", "wrong")
        one(browser, "#save-key").click()
        wait_for(browser, lambda d: one(d, "#status").get_attribute("data-state") == "auth", "the auth status")
        assert "invalid API key" in one(browser, "#auth").text
        browser.execute_script("localStorage.clear()")
