"""The end users' page at ``/``, in a real browser (Debian's chromium, driven by Playwright)
against the real API (uvicorn, in-process generator on a tiny model) and a real Redis."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from contracts.gold_checks import GoldAnswer, gold_deck
from contracts.keys import FEEDBACK_STREAM, gold_answers_key, user_key
from contracts.principles_file import load_principles
from contracts.settings import DEFAULT_MODEL_DIR, Settings
from tests.local_server import local_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root, without a sandbox; no background traffic (this machine's network is closed).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
XSS = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def settings_for(model: Path, redis_url: str, root: Path, **overrides) -> Settings:
    return Settings(base_model=str(model), adapter_store=str(root / "store"), data_dir=root,
                    redis_url=redis_url, default_max_tokens=8, learner_min_feedback=8,
                    **overrides)


@pytest.fixture(scope="module")
def server(serving_model_dir: Path, redis_server, tmp_path_factory) -> Iterator[str]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("page")
    with local_server(settings_for(serving_model_dir, redis_server.url, root)) as url:
        yield url


@pytest.fixture
def page(browser: Browser, server: str, redis_client) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.goto(server)
    yield page
    context.close()


def events(redis_client) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in redis_client.xrange(FEEDBACK_STREAM)]


def sign_in_by_name(page: Page, name: str) -> None:
    page.get_by_label("User name").fill(name)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#whoami")).to_have_text(f"Signed in as {name}")


def ask(page: Page, text: str, answers: int) -> None:
    page.get_by_label("Answers side by side").select_option(str(answers))
    page.get_by_label("Your message").fill(text)
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("#notice")).to_contain_text("ready")


@pytest.mark.slow
def test_sign_in_chat_rank_rate_correct_and_forget(page: Page, redis_client) -> None:
    sign_in_by_name(page, "ada")
    # a stream arrives: the answer area fills while the request runs (3 answers)
    ask(page, "how do I boil an egg", 3)
    answers = page.locator("article.answer")
    expect(answers).to_have_count(3)
    texts = [answers.nth(i).locator(".answer-text").inner_text() for i in range(3)]
    assert all(texts), texts

    # rank: answer 2, then 3, then 1
    for i in (2, 3, 1):
        page.get_by_role("button", name=f"Rank answer {i} next").click()
    expect(answers.nth(1).locator(".rank-badge")).to_have_text("Rank 1")
    page.get_by_role("button", name="Send ranking").click()
    expect(page.locator("#ranking-order")).to_contain_text("Ranking sent")

    # thumbs down on answer 1, score 3, about truth
    page.get_by_label("Score for answer 1 (1–10)").select_option("3")
    page.get_by_label("What your judgment of answer 1 is about").select_option("honest")
    page.get_by_role("button", name="Thumbs down for answer 1").click()
    expect(answers.nth(0).locator(".status")).to_have_text("Thumbs down, score 3 sent.")

    # a score alone on answer 3
    page.get_by_label("Score for answer 3 (1–10)").select_option("8")
    page.get_by_role("button", name="Send score for answer 3").click()
    expect(answers.nth(2).locator(".status")).to_have_text("Score 8 sent.")

    # correct answer 2 into what the user wanted
    page.get_by_role("button", name="Correct answer 2").click()
    page.get_by_label("The answer you wanted instead of answer 2").fill("Boil it for seven minutes.")
    page.get_by_role("button", name="Send correction of answer 2").click()
    expect(answers.nth(1).locator(".status")).to_have_text("Correction sent.")

    recorded = events(redis_client)
    completion_id = recorded[0]["completion_id"]
    assert completion_id.startswith("chatcmpl-")
    assert [(e["type"], e["user_id"], e["completion_id"]) for e in recorded] == [
        ("ranking", "ada", completion_id), ("thumbs", "ada", completion_id),
        ("score", "ada", completion_id), ("correction", "ada", completion_id)]
    assert json.loads(recorded[0]["ranking"]) == [1, 2, 0]
    assert (recorded[1]["choice"], recorded[1]["value"], recorded[1]["score"],
            recorded[1]["criterion"]) == ("0", "down", "3", "honest")
    assert (recorded[2]["choice"], recorded[2]["score"]) == ("2", "8")
    assert "value" not in recorded[2]
    assert (recorded[3]["choice"], recorded[3]["correction"]) == ("1", "Boil it for seven minutes.")

    # the assistant panel counts them; nothing learned yet
    expect(page.locator("#fact-given")).to_contain_text("4 (0 up, 1 down, 1 rankings, 1 scores, 1 corrections)")
    expect(page.locator("#fact-next")).to_have_text("after 4 more judgments")
    expect(page.locator("#fact-adapter")).to_contain_text("base model")
    expect(page.locator("#history-chart rect")).to_have_count(24)

    # the conversation goes on with the best-ranked answer, corrected
    ask(page, "and a soft one?", 1)
    expect(page.locator("#transcript li")).to_have_count(3)
    expect(page.locator("#transcript li").nth(1)).to_have_text("Assistant:Boil it for seven minutes.")

    # forget, after a confirmation: first cancelled, then confirmed
    page.get_by_role("button", name="Forget me…").click()
    page.get_by_role("button", name="Cancel", exact=True).click()
    assert redis_client.exists(user_key("ada"))
    page.get_by_role("button", name="Forget me…").click()
    page.get_by_role("button", name="Yes, delete my data").click()
    expect(page.locator("#notice")).to_have_text(
        "Your data was deleted. Your assistant is the base model again.")
    assert events(redis_client) == [] and not redis_client.exists(user_key("ada"))
    assert not redis_client.keys("tailor:user:ada:*")
    expect(page.locator("#fact-given")).to_have_text("0")


def press_until_focused(page: Page, name: str, key: str = "Tab", most: int = 80) -> None:
    """Tab (or another key) until the element named ``name`` has the focus."""
    for _ in range(most):
        focused = page.evaluate(
            "() => { const e = document.activeElement; return e.getAttribute('aria-label') || "
            "(e.labels && e.labels[0] ? e.labels[0].textContent : '') || e.textContent; }")
        if focused.strip() == name:
            return
        page.keyboard.press(key)
    raise AssertionError(f"{name!r} never got the focus with {key}")


@pytest.mark.slow
def test_the_whole_path_with_the_keyboard_alone(page: Page, redis_client) -> None:
    expect(page.get_by_label("User name")).to_be_focused()
    page.keyboard.type("kay")
    page.keyboard.press("Enter")
    expect(page.locator("#whoami")).to_have_text("Signed in as kay")
    expect(page.get_by_label("Your message")).to_be_focused()
    press_until_focused(page, "Answers side by side")
    page.keyboard.type("2")  # a focused <select> takes the option typed
    press_until_focused(page, "Your message", key="Shift+Tab")
    page.keyboard.type("tell me about tea")
    page.keyboard.press("Enter")
    expect(page.locator("#notice")).to_contain_text("ready")
    expect(page.locator("article.answer")).to_have_count(2)

    press_until_focused(page, "Rank answer 2 next")
    page.keyboard.press("Enter")
    press_until_focused(page, "Rank answer 1 next")
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Send ranking")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#ranking-order")).to_contain_text("Ranking sent")

    press_until_focused(page, "Score for answer 1 (1–10)")
    page.keyboard.type("9")
    press_until_focused(page, "Thumbs up for answer 1")
    page.keyboard.press("Enter")
    expect(page.locator("article.answer").nth(0).locator(".status")).to_have_text(
        "Thumbs up, score 9 sent.")

    press_until_focused(page, "Correct answer 2")
    page.keyboard.press("Enter")
    expect(page.get_by_label("The answer you wanted instead of answer 2")).to_be_focused()
    page.keyboard.press("Control+A")
    page.keyboard.type("Green tea wants 80 degrees.")
    press_until_focused(page, "Send correction of answer 2")
    page.keyboard.press("Enter")
    expect(page.locator("article.answer").nth(1).locator(".status")).to_have_text("Correction sent.")

    recorded = events(redis_client)
    assert [(e["user_id"], e["type"]) for e in recorded] == [
        ("kay", "ranking"), ("kay", "thumbs"), ("kay", "correction")]
    assert json.loads(recorded[0]["ranking"]) == [1, 0]
    assert (recorded[1]["value"], recorded[1]["score"], recorded[1]["criterion"]) == (
        "up", "9", "helpful")
    assert recorded[2]["correction"] == "Green tea wants 80 degrees."

    press_until_focused(page, "Forget me…")
    page.keyboard.press("Enter")
    # the safe choice has the focus first
    expect(page.get_by_role("button", name="Cancel", exact=True)).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#notice")).to_contain_text("Your data was deleted")
    assert events(redis_client) == []


@pytest.mark.slow
def test_markup_from_a_model_or_a_person_is_shown_as_text_and_never_runs(
    page: Page, redis_client
) -> None:
    # A user name with markup: refused by the server, and the error naming it shown as text.
    page.get_by_label("User name").fill(XSS)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#error")).to_contain_text("is not a valid user id")
    assert page.locator("#error img, #error script").count() == 0

    sign_in_by_name(page, "mo")
    # The person's own message, shown in the conversation.
    ask(page, XSS, 1)
    page.get_by_label("Your message").fill("next")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("#transcript li").first).to_have_text(f"You:{XSS}")

    # A model answer with markup. The tiny test model cannot be made to write a given
    # string, so this one stream is the server's format with that text in it.
    def stream(route: Route) -> None:
        chunks = [{"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0,
                   "model": "tailor-base", "system_fingerprint": "tailor-base",
                   "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                  for piece in (XSS[:20], XSS[20:])]
        body = "".join(f"data: {json.dumps(c)}\r\n\r\n" for c in chunks) + "data: [DONE]\r\n\r\n"
        route.fulfill(status=200, headers={"content-type": "text/event-stream"}, body=body)

    page.route("**/v1/chat/completions", stream)
    ask(page, "say something odd", 1)
    answer = page.locator("article.answer .answer-text")
    expect(answer).to_have_text(XSS)
    assert answer.locator("img, script").count() == 0
    assert page.evaluate("() => window.__pwned") is None


@pytest.mark.slow
def test_with_keys_the_page_asks_for_one_shows_errors_readably_and_keeps_it_out_of_urls(
    browser: Browser, serving_model_dir: Path, redis_server, redis_client, tmp_path
) -> None:
    settings = settings_for(serving_model_dir, redis_server.url, tmp_path,
                            api_keys={"sk-page-secret": "kim"})
    with local_server(settings) as url:
        context = browser.new_context()
        page = context.new_page()
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(url)
        expect(page.get_by_label("API key")).to_be_focused()
        page.get_by_label("API key").fill("sk-wrong")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#error")).to_have_text("Sign-in failed: unknown API key (HTTP 401)")
        page.get_by_label("API key").fill("sk-page-secret")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#whoami")).to_have_text("Signed in as kim")
        ask(page, "hello", 1)
        page.get_by_role("button", name="Thumbs up for answer 1").click()
        expect(page.locator("article.answer .status")).to_have_text("Thumbs up sent.")
        page.reload()  # the tab keeps the sign-in (session storage), not the URL
        expect(page.locator("#whoami")).to_have_text("Signed in as kim")
        context.close()
    assert [e["user_id"] for e in events(redis_client)] == ["kim"]
    assert requested and not [u for u in requested if re.search("sk-", u)]


@pytest.mark.slow
def test_the_page_is_served_with_a_policy_that_runs_only_its_own_script(server: str) -> None:
    import httpx

    response = httpx.get(server)
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "form-action 'none'" in policy
    assert "unsafe-inline" not in policy
    assert httpx.get(f"{server}/page/../api.py").status_code == 404
    assert httpx.get(f"{server}/page/tailor.js").headers["content-type"].startswith("text/javascript")


@pytest.fixture(scope="module")
def gold_server(serving_model_dir: Path, redis_server, tmp_path_factory) -> Iterator[str]:
    """A server with the shipped principles: it has gold checks to offer."""
    root = tmp_path_factory.mktemp("page-gold")
    principles = DEFAULT_MODEL_DIR / "principles.yaml"
    with local_server(settings_for(serving_model_dir, redis_server.url, root,
                                   principles_file=principles)) as url:
        yield url


def judge_by_api(server: str, user: str, judgments: int) -> None:
    """``judgments`` thumbs, each on a fresh completion, as another client of the user's
    would give them."""
    headers = {"X-User-Id": user}
    for _ in range(judgments):
        completion = httpx.post(f"{server}/v1/chat/completions", headers=headers, json={
            "model": "tailor-base", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4}).json()
        httpx.post(f"{server}/v1/feedback", headers=headers, json={
            "completion_id": completion["id"], "type": "thumbs", "choice": 0,
            "value": "up"}).raise_for_status()


@pytest.mark.slow
def test_every_tenth_judgment_brings_a_gold_check_that_can_be_answered_or_put_off(
        browser: Browser, gold_server: str, redis_client) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(gold_server)
    sign_in_by_name(page, "gil")
    check = page.locator("#gold-check")
    judge_by_api(gold_server, "gil", 9)
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#fact-given")).to_contain_text("9 (9 up")
    expect(check).to_be_hidden()  # not due before the tenth judgment

    judge_by_api(gold_server, "gil", 1)
    page.get_by_role("button", name="Refresh").click()
    expect(check).to_be_visible()
    shown = page.locator("#gold-answer").inner_text()
    deck = {c.answer: c for c in gold_deck(load_principles(DEFAULT_MODEL_DIR / "principles.yaml"))}
    assert shown in deck
    expect(page.locator("#gold-question")).to_contain_text(deck[shown].criterion)
    page.get_by_role("button", name="No", exact=True).click()
    expect(page.locator("#notice")).to_have_text("Thank you: your check was recorded.")
    expect(check).to_be_hidden()
    kept = GoldAnswer.from_json(redis_client.hget(gold_answers_key("gil"), deck[shown].id))
    assert kept.said_fine is False and kept.fine == deck[shown].fine

    # the next one is due after ten more; "Not now" puts it off until the judgment after
    judge_by_api(gold_server, "gil", 10)
    page.get_by_role("button", name="Refresh").click()
    expect(check).to_be_visible()
    page.get_by_role("button", name="Not now").click()
    expect(check).to_be_hidden()
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#fact-given")).to_contain_text("20 (20 up")
    expect(check).to_be_hidden()
    judge_by_api(gold_server, "gil", 1)
    page.get_by_role("button", name="Refresh").click()
    expect(check).to_be_visible()
    assert redis_client.hlen(gold_answers_key("gil")) == 1
    context.close()
