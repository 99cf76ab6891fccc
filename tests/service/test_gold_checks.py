"""``/v1/users/{id}/gold-checks`` over a real socket and a real Redis: a user takes the
written principles' answers one by one, judges them, and their verdicts are kept beside
the known ones for the learners."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import torch

from contracts.gold_checks import GoldAnswer, gold_deck
from contracts.keys import gold_answers_key
from contracts.principles_file import load_principles
from contracts.settings import DEFAULT_MODEL_DIR, Settings
from tests.local_server import local_server

ALICE = {"X-User-Id": "alice"}
SHIPPED = DEFAULT_MODEL_DIR / "principles.yaml"


@pytest.fixture(scope="module")
def server(serving_model_dir: Path, redis_server, tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("gold")
    settings = Settings(base_model=str(serving_model_dir), adapter_store=str(root / "store"),
                        data_dir=root, redis_url=redis_server.url, principles_file=SHIPPED)
    with local_server(settings) as url:
        yield url


def next_check(server: str, headers: dict = ALICE, user: str = "alice") -> httpx.Response:
    return httpx.get(f"{server}/v1/users/{user}/gold-checks/next", headers=headers)


def answer(server: str, check_id: str, thumb: str, user: str = "alice") -> httpx.Response:
    return httpx.post(f"{server}/v1/users/{user}/gold-checks/{check_id}",
                      json={"thumb": thumb}, headers={"X-User-Id": user})


def test_a_user_judges_every_check_once_and_their_verdicts_are_kept_beside_the_known_ones(
        server, redis_client):
    truth = {c.id: c.fine for c in gold_deck(load_principles(SHIPPED))}
    seen = []
    while (taken := next_check(server)).status_code == 200:
        check = taken.json()
        assert set(check) == {"id", "object", "criterion", "question", "prompt", "answer"}
        assert check["object"] == "gold_check" and check["criterion"] in ("harmless", "honest")
        assert check["id"] not in seen
        seen.append(check["id"])
        thumb = "up" if len(seen) % 3 else "down"
        assert answer(server, check["id"], thumb).status_code == 201
    assert taken.status_code == 404 and taken.json()["error"]["code"] == "no_gold_check"
    assert sorted(seen) == sorted(truth)
    kept = {k.decode(): GoldAnswer.from_json(v)
            for k, v in redis_client.hgetall(gold_answers_key("alice")).items()}
    assert {k: a.fine for k, a in kept.items()} == truth
    assert [kept[k].said_fine for k in seen] == [bool((i + 1) % 3) for i in range(len(seen))]
    view = httpx.get(f"{server}/v1/users/alice", headers=ALICE).json()
    assert view["feedback"]["gold_checks"] == len(truth) and view["feedback"]["total"] == 0


def test_a_second_answer_to_a_check_is_a_duplicate_and_the_first_stands(server, redis_client):
    check_id = next_check(server).json()["id"]
    assert answer(server, check_id, "up").status_code == 201
    again = answer(server, check_id, "down")
    assert again.status_code == 200 and again.json()["duplicate"] is True
    kept = GoldAnswer.from_json(redis_client.hget(gold_answers_key("alice"), check_id))
    assert kept.said_fine is True
    view = httpx.get(f"{server}/v1/users/alice", headers=ALICE).json()
    assert view["feedback"]["gold_checks"] == 1
    assert next_check(server).json()["id"] != check_id


def test_bad_requests_get_openai_errors_naming_the_fix(server, redis_client):
    assert next_check(server, headers={}).status_code == 401
    assert next_check(server, headers={"X-User-Id": "bob"}).status_code == 403
    unknown = answer(server, "gold-0000000000000000", "up")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["param"] == "check_id"
    assert "gold-checks/next" in unknown.json()["error"]["message"]
    check_id = next_check(server).json()["id"]
    wrong = answer(server, check_id, "maybe")
    assert wrong.status_code == 422 and wrong.json()["error"]["param"] == "thumb"
    assert not redis_client.exists(gold_answers_key("alice"))  # nothing was recorded


def test_forgetting_a_user_forgets_their_answers(server, redis_client):
    answer(server, next_check(server).json()["id"], "up")
    assert redis_client.exists(gold_answers_key("alice"))
    assert httpx.delete(f"{server}/v1/users/alice", headers=ALICE).status_code == 200
    assert not redis_client.exists(gold_answers_key("alice"))


def test_a_server_without_principles_has_no_checks(serving_model_dir, redis_server, tmp_path):
    settings = Settings(base_model=str(serving_model_dir), data_dir=tmp_path,
                        adapter_store=str(tmp_path / "s"), redis_url=redis_server.url)
    assert settings.principles_path is None
    with local_server(settings) as url:
        taken = next_check(url)
    assert taken.status_code == 404 and "no principles file" in taken.json()["error"]["message"]
