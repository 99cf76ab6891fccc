"""Which user next, and leases that keep a user to one worker."""

import time

import pytest

from contracts.keys import PENDING_KEY, lease_key
from learners.scheduler import LeaseLost, Scheduler


def test_candidates_need_min_feedback_and_come_most_pending_first(redis_client):
    redis_client.zadd(PENDING_KEY, {"a": 2, "b": 9, "c": 5})
    assert Scheduler(redis_client, min_feedback=4, lease_s=10).candidates() == ["b", "c"]


def test_a_user_is_leased_to_one_worker_at_a_time(redis_client):
    redis_client.zadd(PENDING_KEY, {"a": 5, "b": 4})
    first, second = Scheduler(redis_client, 4, 10), Scheduler(redis_client, 4, 10)
    with first.next_user() as one, second.next_user() as two:
        assert one[0] == "a" and two[0] == "b"
        with Scheduler(redis_client, 4, 10).next_user() as three:
            assert three is None
    assert not redis_client.exists(lease_key("a")) and not redis_client.exists(lease_key("b"))


def test_an_expired_lease_can_be_taken_and_the_old_holder_cannot_renew_or_release_it(redis_client):
    slow, fast = Scheduler(redis_client, 1, 1), Scheduler(redis_client, 1, 10)
    token = slow.try_lease("a")
    assert fast.try_lease("a") is None
    time.sleep(1.1)
    new_token = fast.try_lease("a")
    assert new_token is not None
    with pytest.raises(LeaseLost):
        slow.renew("a", token)
    slow.release("a", token)
    assert redis_client.get(lease_key("a")).decode() == new_token


def test_mark_trained_takes_used_examples_off_the_pending_count(redis_client):
    scheduler = Scheduler(redis_client, 1, 10)
    redis_client.zadd(PENDING_KEY, {"a": 7})
    scheduler.mark_trained("a", 5)
    assert redis_client.zscore(PENDING_KEY, "a") == 2
    scheduler.mark_trained("a", 2)
    assert redis_client.zscore(PENDING_KEY, "a") is None
