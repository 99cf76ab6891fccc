"""Open WebUI's message ratings reach Tailor (issue 11): real Redis, real HTTP, and the
payloads Open WebUI 0.12.4 sends, built here as its source builds them.

- The chat request's headers: ``open_webui/utils/headers.py`` (``include_user_info_headers``
  with ENABLE_FORWARD_USER_INFO_HEADERS, ``parse_custom_headers`` filling the connection's
  header template ``{{MESSAGE_ID}}`` / ``{{TASK}}``; tasks: ``routers/tasks.py`` metadata).
- The event: ``open_webui/events.py`` ``build_event`` / ``Event``, published by
  ``routers/evaluations.py`` (``create_feedback``, ``update_feedback_by_id``) with
  ``data={'rating': ...}`` and the feedback id as subject.
- The feedback record: ``models/feedbacks.py`` ``FeedbackModel``, whose ``data`` / ``meta``
  the chat page writes (``ResponseMessage.svelte`` ``feedbackHandler``: thumb, then tags;
  ``RateComment.svelte``: details.rating 1-10, reason, comment).
- The body sent: Tailor's function ``deploy/openwebui/tailor_feedback.py`` (loaded from
  its file; its ``tailor_payload`` and ``send`` are what runs inside Open WebUI).

`make check-openwebui` runs the real Open WebUI against Tailor; this is the mapping.
"""

import asyncio
import importlib.util
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
import torch

from contracts.keys import FEEDBACK_STREAM, openwebui_message_key
from contracts.settings import Settings
from service.openwebui_feedback import NotAJudgment, OpenWebUIFeedback, judgments
from tests.conftest import redis_snapshot
from tests.local_server import local_server

GATEWAY_KEY = "sk-openwebui-gateway"
SECRET = "owui-" + "5e" * 16
FUNCTION_FILE = Path(__file__).parents[2] / "deploy" / "openwebui" / "tailor_feedback.py"
OWUI_VERSION = "0.12.4"


def load_function():
    spec = importlib.util.spec_from_file_location("tailor_feedback_function", FUNCTION_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FUNCTION = load_function()


@pytest.fixture(scope="module")
def settings(serving_model_dir: Path, redis_server, tmp_path_factory) -> Settings:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("openwebui")
    return Settings(base_model=str(serving_model_dir), adapter_store=str(root / "store"),
                    data_dir=root, redis_url=redis_server.url, gateway_keys=[GATEWAY_KEY],
                    openwebui_secret=SECRET, max_comment_chars=100)


@pytest.fixture(scope="module")
def server(settings: Settings):
    with local_server(settings) as url:
        yield url


@pytest.fixture
def tailor(server, redis_client) -> str:  # redis_client: a flushed database per test
    return server


# --- what Open WebUI sends --------------------------------------------------------------


def owui_user() -> str:
    return str(uuid.uuid4())  # Open WebUI's user ids are uuid4s (models/users.py)


def user_headers(user_id: str) -> dict[str, str]:
    """utils/headers.py include_user_info_headers, with the gateway key as the bearer."""
    return {"Authorization": f"Bearer {GATEWAY_KEY}", "X-OpenWebUI-User-Name": "Ada",
            "X-OpenWebUI-User-Id": user_id, "X-OpenWebUI-User-Email": "ada@example.com",
            "X-OpenWebUI-User-Role": "user"}


def chat(url: str, user_id: str, message_id: str, task: str = "", stream: bool = False) -> str:
    """A chat request as Open WebUI's connection sends it; returns the completion id."""
    headers = {**user_headers(user_id), "X-OpenWebUI-Chat-Id": "chat-1",
               # the README's header template, filled by parse_custom_headers
               "X-OpenWebUI-Message-Id": message_id, "X-OpenWebUI-Task": task}
    body = {"model": "tailor-base", "stream": stream, "max_tokens": 4,
            "messages": [{"role": "user", "content": "how do I boil an egg"}]}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    if stream:  # the chunks' id; the completion is kept before [DONE]
        first = next(line for line in response.text.splitlines() if line.startswith("data: {"))
        return json.loads(first.removeprefix("data: "))["id"]
    return response.json()["id"]


def feedback_record(user_id: str, message_id: str, feedback_id: str, **data) -> dict:
    """FeedbackModel as evaluations.py stores what ResponseMessage.svelte posts."""
    now = int(time.time())
    return {
        "id": feedback_id, "user_id": user_id, "version": 0, "type": "rating",
        "data": {"model_id": "tailor-base", **data},
        "meta": {"arena": False, "model_id": "tailor-base", "message_id": message_id,
                 "message_index": 2, "chat_id": "chat-1", "base_models": {"tailor-base": None}},
        "snapshot": {"chat": {"id": "chat-1", "chat": {"history": {"messages": {}}}}},
        "created_at": now, "updated_at": now,
    }


def event_of(feedback: dict, name: str = "feedback.created") -> dict:
    """events.py build_event(...) of evaluations.py's publish_event(...), model_dump()ed."""
    resource, operation = name.rsplit(".", 1)
    return {
        "schema": OWUI_VERSION, "id": str(uuid.uuid4()), "event": name, "resource": resource,
        "operation": operation, "created_at": int(time.time()), "instance_id": None,
        "version": OWUI_VERSION, "source": "api",
        "actor": {"id": feedback["user_id"], "name": "Ada", "email": "ada@example.com",
                  "role": "user", "type": "user"},
        "subject": {"type": "feedback", "id": feedback["id"]},
        "data": {"rating": (feedback.get("data") or {}).get("rating")},
        "message": None,
    }


def send(url: str, event: dict, feedback: dict | None, secret: str = SECRET) -> httpx.Response:
    """What Tailor's Open WebUI function posts (its own tailor_payload and send)."""
    payload = FUNCTION.tailor_payload(event, feedback) if feedback is not None else event
    status, text = asyncio.run(FUNCTION.send(url, secret, payload, attempts=1))
    return httpx.Response(status, text=text)


def counts(url: str, user_id: str) -> dict:
    response = httpx.get(f"{url}/v1/users/{user_id}", headers=user_headers(user_id))
    assert response.status_code == 200, response.text
    return response.json()["feedback"]


def stream_events(redis_client) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in redis_client.xrange(FEEDBACK_STREAM)]


# --- the ratings ----------------------------------------------------------------------------


def test_a_thumb_then_tags_then_the_rating_form_as_the_chat_page_sends_them(
    tailor, redis_client
):
    user, message, fid = owui_user(), str(uuid.uuid4()), str(uuid.uuid4())
    completion_id = chat(tailor, user, message)

    # 1. thumb down: createNewFeedback
    thumb = feedback_record(user, message, fid, rating=-1)
    created = send(tailor, event_of(thumb), thumb)
    assert created.status_code == 201, created.text
    assert created.json()["completion_id"] == completion_id
    # 2. generated tags: updateFeedbackById with the same rating (no new judgment)
    tagged = feedback_record(user, message, fid, rating=-1, tags=["cooking"])
    retagged = send(tailor, event_of(tagged, "feedback.updated"), tagged)
    assert retagged.status_code == 200 and retagged.json()["judgments"][0]["duplicate"]
    # 3. RateComment: a 1-10 rating, a reason, a comment
    rated = feedback_record(user, message, fid, rating=-1, tags=["cooking"],
                            details={"rating": 3}, reason="not_factually_correct",
                            comment="eggs do not boil in 30 seconds")
    form = send(tailor, event_of(rated, "feedback.updated"), rated)
    assert form.status_code == 201, form.text

    events = stream_events(redis_client)
    assert [(e["type"], e.get("value"), e.get("score"), e["criterion"]) for e in events] == [
        ("thumbs", "down", None, "helpful"),
        ("thumbs", "down", None, "honest"),  # the reason says what the thumb was about
        ("score", None, "3", "honest"),
    ]
    assert all(e["completion_id"] == completion_id and e["choice"] == "0" for e in events)
    assert events[2]["comment"] == "eggs do not boil in 30 seconds"
    seen = counts(tailor, user)
    assert (seen["thumbs_up"], seen["thumbs_down"], seen["scores"], seen["total"]) == (0, 2, 1, 3)
    assert seen["by_criterion"] == {"helpful": 1, "honest": 2}


def test_a_resent_event_is_recorded_once_and_an_edited_rating_is_a_new_judgment(
    tailor, redis_client
):
    user, message, fid = owui_user(), str(uuid.uuid4()), str(uuid.uuid4())
    chat(tailor, user, message)
    rated = feedback_record(user, message, fid, rating=1, details={"rating": 8},
                            reason="thorough_explanation", comment="clear")
    event = event_of(rated)
    assert send(tailor, event, rated).status_code == 201
    before = redis_snapshot(redis_client)
    resent = send(tailor, event, rated)  # Open WebUI or the function sending it again
    assert resent.status_code == 200
    assert [j["duplicate"] for j in resent.json()["judgments"]] == [True, True]
    assert redis_snapshot(redis_client) == before

    edited = feedback_record(user, message, fid, rating=1, details={"rating": 9},
                             reason="thorough_explanation", comment="clear")
    assert send(tailor, event_of(edited, "feedback.updated"), edited).status_code == 201
    scores = [e["score"] for e in stream_events(redis_client) if e["type"] == "score"]
    assert scores == ["8", "9"]
    assert counts(tailor, user)["thumbs_up"] == 1  # the thumb did not change: once


def test_a_wrong_or_missing_secret_is_refused_and_changes_nothing(tailor, redis_client):
    user, message, fid = owui_user(), str(uuid.uuid4()), str(uuid.uuid4())
    chat(tailor, user, message)
    thumb = feedback_record(user, message, fid, rating=1)
    before = redis_snapshot(redis_client)
    for secret in ("owui-" + "00" * 16, ""):
        refused = send(tailor, event_of(thumb), thumb, secret=secret)
        assert refused.status_code == 401, refused.text
        error = refused.json()["error"]
        assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    assert redis_snapshot(redis_client) == before
    # the gateway key of Open WebUI's connection is accepted too
    assert send(tailor, event_of(thumb), thumb, secret=GATEWAY_KEY).status_code == 201


def test_a_background_task_with_the_same_message_id_does_not_take_the_answers_place(
    tailor, redis_client
):
    user, message, fid = owui_user(), str(uuid.uuid4()), str(uuid.uuid4())
    answer = chat(tailor, user, message)
    title = chat(tailor, user, message, task="title_generation")  # routers/tasks.py metadata
    assert title != answer
    thumb = feedback_record(user, message, fid, rating=1)
    accepted = send(tailor, event_of(thumb), thumb)
    assert accepted.status_code == 201 and accepted.json()["completion_id"] == answer
    assert redis_client.ttl(openwebui_message_key(user, message)) > 0  # expires with it


def test_a_streamed_answer_is_tied_to_its_message_too(tailor, redis_client):
    user, message, fid = owui_user(), str(uuid.uuid4()), str(uuid.uuid4())
    answer = chat(tailor, user, message, stream=True)  # Open WebUI's chat page streams
    thumb = feedback_record(user, message, fid, rating=-1)
    accepted = send(tailor, event_of(thumb), thumb)
    assert accepted.status_code == 201 and accepted.json()["completion_id"] == answer


def test_an_unknown_message_or_another_users_message_is_a_404_and_changes_nothing(
    tailor, redis_client
):
    alice, bob, message = owui_user(), owui_user(), str(uuid.uuid4())
    chat(tailor, alice, message)
    before = redis_snapshot(redis_client)
    for user, rated_message in ((alice, str(uuid.uuid4())), (bob, message)):
        thumb = feedback_record(user, rated_message, str(uuid.uuid4()), rating=1)
        refused = send(tailor, event_of(thumb), thumb)
        assert refused.status_code == 404, refused.text
        assert refused.json()["error"]["code"] == "message_not_found"
        assert refused.json()["error"]["param"] == "feedback.meta.message_id"
    assert redis_snapshot(redis_client) == before


def test_an_arena_rating_is_a_thumb_on_the_rated_answer_and_says_what_is_left_out(
    tailor, redis_client
):
    user, message, fid = owui_user(), str(uuid.uuid4()), str(uuid.uuid4())
    chat(tailor, user, message)
    arena = feedback_record(user, message, fid, rating=1, sibling_model_ids=["other-model"])
    arena["meta"]["arena"] = True
    accepted = send(tailor, event_of(arena), arena)
    assert accepted.status_code == 201
    assert [j["type"] for j in accepted.json()["judgments"]] == ["thumbs"]
    assert "comparison with sibling answers" in accepted.json()["not_recorded"][0]


def test_other_events_are_acknowledged_and_ignored_and_the_bare_webhook_is_told_why(
    tailor, redis_client
):
    user, message, fid = owui_user(), str(uuid.uuid4()), str(uuid.uuid4())
    chat(tailor, user, message)
    before = redis_snapshot(redis_client)
    signup = {**event_of(feedback_record(user, message, fid)), "event": "auth.signup",
              "resource": "auth", "operation": "signup", "subject": None, "data": {}}
    ignored = send(tailor, signup, None)
    assert ignored.status_code == 200 and ignored.json()["judgments"] == []
    assert "auth.signup" in ignored.json()["not_recorded"][0]
    thumb = feedback_record(user, message, fid, rating=1)
    bare = send(tailor, event_of(thumb), None)  # Open WebUI's webhook body: no record
    assert bare.status_code == 422 and bare.json()["error"]["code"] == "missing_feedback"
    bad = feedback_record(user, message, fid, rating=1, details={"rating": 11})
    refused = send(tailor, event_of(bad), bad)
    assert refused.status_code == 422
    assert refused.json()["error"]["param"] == "feedback.data.details.rating"
    assert redis_snapshot(redis_client) == before


def test_forgetting_the_user_deletes_the_message_link(tailor, redis_client):
    user, message = owui_user(), str(uuid.uuid4())
    chat(tailor, user, message)
    assert redis_client.exists(openwebui_message_key(user, message))
    forgotten = httpx.delete(f"{tailor}/v1/users/{user}", headers=user_headers(user))
    assert forgotten.status_code == 200, forgotten.text
    assert not redis_client.exists(openwebui_message_key(user, message))


# --- the mapping alone ----------------------------------------------------------------------


def mapped(criteria=("helpful", "honest", "harmless"), **data):
    record = OpenWebUIFeedback.model_validate(feedback_record("u1", "m1", "f1", **data))
    return judgments(record, criteria, max_comment_chars=10)


def test_the_mapping_of_ratings_reasons_and_comments():
    # Open WebUI may store the rating as a string (RatingData.rating: str | int)
    assert [(j.type, j.value) for j in mapped(rating="1")] == [("thumbs", "up")]
    assert mapped(rating=0) == [] and mapped() == []
    assert mapped(rating=1, reason="accurate_information")[0].criterion == "honest"
    assert mapped(rating=-1, reason="too_verbose")[0].criterion == "helpful"
    # an operator's criterion named like the reason
    assert mapped(("helpful", "too_verbose"), rating=-1, reason="too_verbose")[0].criterion \
        == "too_verbose"
    assert mapped(rating=1, comment="x" * 50)[0].comment == "x" * 10  # cut, not refused
    first, again = mapped(rating=1, details={"rating": 7}), mapped(rating=1, details={"rating": 7})
    assert [j.idempotency_key for j in first] == [j.idempotency_key for j in again]
    assert mapped(rating=1, details={"rating": None})[0].type == "thumbs"
    with pytest.raises(NotAJudgment, match="data.rating"):
        mapped(rating=5)


def test_a_short_secret_or_one_that_is_a_users_key_is_refused_at_start():
    with pytest.raises(ValueError, match="TAILOR_OPENWEBUI_SECRET is shorter"):
        Settings(openwebui_secret="short")
    with pytest.raises(ValueError, match="also a user's key"):
        Settings(openwebui_secret=SECRET, api_keys={SECRET: "alice"})


def test_a_malformed_message_id_header_is_a_400_naming_it(tailor, redis_client):
    headers = {**user_headers(owui_user()), "X-OpenWebUI-Message-Id": "{{MESSAGE_ID}}"}
    body = {"model": "tailor-base", "max_tokens": 2,
            "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{tailor}/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "X-OpenWebUI-Message-Id"
    assert list(redis_client.scan_iter()) == []
