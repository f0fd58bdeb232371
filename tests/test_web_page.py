"""The chat page at `/` of `mlxspec serve`: the page and every file it references are served
from the package with their types; streamed chat chunks say which tokens came from the draft,
and the `openai` client still parses them; and in a real headless Chromium (the OS packages'
chromium and chromedriver, driven by selenium) a typed message gets, turn after turn, exactly
the text the API answers greedily to the same conversation and settings, the draft's tokens
in their own colour; a refused request shows the server's message, Stop ends an answer, and
New chat clears the conversation."""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from serving import MODEL, Server, wait_until

pytest.importorskip("openai")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
SYSTEM = "Be brief."


@pytest.fixture(scope="module")
def server(tmp_path_factory, hf_full_dir):
    """The target drafting for itself, 3 tokens every round: greedy, every draft is accepted
    and each round's last token is the target's own, so an answer holds tokens of both kinds."""
    s = Server(hf_full_dir, "--draft", str(hf_full_dir), "--no-adaptive", "-k", "3",
               cache=tmp_path_factory.mktemp("cache"))
    yield s
    s.stop()


def fetch(server: Server, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_the_page_and_the_files_it_references_are_served_from_the_package(server):
    status, headers, page = fetch(server, "/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in headers["content-security-policy"]
    referenced = re.findall(r'(?:src|href)="([^"]+)"', page.decode())
    files = [r for r in referenced if r != "data:,"]  # the empty icon (no request for /favicon.ico)
    assert set(files) == {"/web/chat.css", "/web/chat.js"}  # nothing from elsewhere (no CDN)
    types = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
    for path in files:
        status, headers, body = fetch(server, path)
        shipped = ROOT / "mlxspec" / "assets" / "web" / path.removeprefix("/web/")
        assert status == 200 and headers["content-type"] == types[shipped.suffix] and body == shipped.read_bytes()
    for path in ("/web/missing.js", "/web/..%2Fserve%2Fapp.py", "/web/"):
        status, _, body = fetch(server, path)
        assert status == 404 and json.loads(body)["error"]["code"] == "not_found", path
    status, _, body = fetch(server, "/nowhere")
    assert status == 404 and "/ (a chat page)" in json.loads(body)["error"]["message"]
    assert f"a chat page at {server.url}/" in server.log()  # the start line says where to point a browser


def test_streamed_chunks_say_which_tokens_the_draft_proposed(server):
    messages = [{"role": "user", "content": "Hello there"}]
    chunks = list(server.client.chat.completions.create(model=MODEL, messages=messages, max_tokens=24, temperature=0,
                                                        stream=True, stream_options={"include_usage": True}))
    tokens = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert all(c.model_extra["mlxspec"]["from_draft"] in (True, False) for c in tokens)
    assert "mlxspec" not in (chunks[0].model_extra or {}) and "mlxspec" not in (chunks[-1].model_extra or {})
    drafted = sum(c.model_extra["mlxspec"]["from_draft"] for c in tokens)
    assert drafted == chunks[-1].usage.model_extra["speculative"]["accepted"] > 0
    whole = server.client.chat.completions.create(model=MODEL, messages=messages, max_tokens=24, temperature=0)
    assert "".join(c.choices[0].delta.content for c in tokens) == whole.choices[0].message.content


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver; "
                    "`make test` does as root)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1000,1100"):
        options.add_argument(flag)
    # The OpenBLAS preloaded for MLX (the Makefile's LD_PRELOAD) crashes Chromium's renderer.
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER, env=env))
    yield driver
    driver.quit()


class Page:
    """The chat page open in the browser."""

    def __init__(self, driver, url: str, **settings: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver, self.by = driver, By
        driver.get(url)
        for field, value in settings.items():
            self.find(f"#{field}").send_keys(value)

    def find(self, css: str, every: bool = False):
        return (self.driver.find_elements if every else self.driver.find_element)(self.by.CSS_SELECTOR, css)

    def say(self, text: str, enter: bool = False) -> None:
        self.find("#message").send_keys(text)
        if enter:
            self.find("#message").send_keys("\n")
        else:
            self.find("#send").click()

    def wait(self, css: str):
        """The first element matching `css`, once there is one (a bound, not a speed)."""
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, 60).until(lambda d: (d.find_elements(self.by.CSS_SELECTOR, css) or [0])[0])

    def answer(self, turn: int) -> tuple[str, str]:
        """The `turn`-th answer (from 1) once it ended: its text and how it ended."""
        item = self.wait(f".message.assistant:nth-of-type({2 * turn})[data-state]")  # the items alternate
        return self.text(item.find_element(self.by.CSS_SELECTOR, ".content")), item.get_attribute("data-state")

    def text(self, element) -> str:
        return self.driver.execute_script("return arguments[0].textContent", element)


def test_the_page_streams_the_greedy_answer_turn_after_turn_with_the_draft_in_colour(server, browser):
    page = Page(browser, server.url + "/", system=SYSTEM, temperature="0", **{"max-tokens": "24"})
    conversation = [{"role": "system", "content": SYSTEM}]
    for turn, (question, enter) in enumerate([("What comes after 7?", False), ("And then?", True)], start=1):
        page.say(question, enter)
        text, state = page.answer(turn)
        conversation.append({"role": "user", "content": question})
        api = server.client.chat.completions.create(model=MODEL, messages=conversation, max_tokens=24, temperature=0)
        assert (text, state) == (api.choices[0].message.content, "done")
        conversation.append({"role": "assistant", "content": text})
    drafted = page.find(".message.assistant .draft", every=True)
    sampled = page.find(".message.assistant .content span:not(.draft)", every=True)
    assert drafted and sampled
    assert drafted[0].value_of_css_property("background-color") != sampled[0].value_of_css_property("background-color")
    shown = re.fullmatch(r"(\d+) of (\d+)", page.text(page.find("#from-draft")))  # chunks: tokens that showed text
    assert shown and 0 < int(shown[1]) < int(shown[2]) <= 24
    assert re.fullmatch(r"\d+\.\d", page.text(page.find("#tps")))
    assert page.text(page.find("#acceptance")).endswith(" %") and page.find("#model").text == MODEL
    if os.environ.get("MLXSPEC_SCREENSHOT"):
        browser.save_screenshot(os.environ["MLXSPEC_SCREENSHOT"])


STOP_AT_FIRST_TEXT = """
const observer = new MutationObserver(() => {
  if (document.querySelector(".message.assistant .content span")) {
    observer.disconnect();
    document.getElementById("stop").click();
  }
});
observer.observe(document.getElementById("conversation"), { childList: true, subtree: true });
"""


def test_a_refused_request_shows_the_servers_message_and_stop_ends_an_answer(server, browser):
    page = Page(browser, server.url + "/", temperature="0", **{"max-tokens": "-3"})
    page.say("Hello")
    error = page.wait("#error:not([hidden])").text
    assert "max_tokens" in error and not page.find(".message", every=True)  # the turn was taken back
    assert page.find("#message").get_attribute("value") == "Hello"  # left to edit
    page.find("#max-tokens").clear()
    page.find("#max-tokens").send_keys("500")  # the context's most
    # Stop is clicked from inside the page as the first text shows: this tiny model can finish
    # 500 tokens before a click sent from here arrives.
    browser.execute_script(STOP_AT_FIRST_TEXT)
    page.find("#send").click()
    text, state = page.answer(1)
    assert state == "stopped" and text and page.find("#send").is_enabled()
    wait_until(lambda: server.get("/health")["running"] == 0, what="the stopped answer's row left the batch")
    assert not page.find("#error").is_displayed()
    page.find("#clear").click()  # a new chat
    assert not page.find(".message", every=True) and page.text(page.find("#from-draft")) == "–"
