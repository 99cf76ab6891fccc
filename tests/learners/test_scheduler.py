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


def test_renew_resets_the_expiry_of_a_lease_still_held(redis_client):
    scheduler = Scheduler(redis_client, 1, 10)
    token = scheduler.try_lease("a")
    assert 9000 < redis_client.pttl(lease_key("a")) <= 10_000  # the lease expires by itself
    redis_client.pexpire(lease_key("a"), 500)  # most of the lease used up
    scheduler.renew("a", token)
    assert redis_client.pttl(lease_key("a")) > 9000


def test_a_released_lease_cannot_be_renewed_and_the_user_can_be_leased_again(redis_client):
    scheduler = Scheduler(redis_client, 1, 10)
    token = scheduler.try_lease("a")
    scheduler.release("a", token)
    with pytest.raises(LeaseLost):
        scheduler.renew("a", token)
    assert scheduler.try_lease("a") not in (None, token)


def test_mark_trained_takes_used_examples_off_the_pending_count(redis_client):
    scheduler = Scheduler(redis_client, 1, 10)
    redis_client.zadd(PENDING_KEY, {"a": 7})
    scheduler.mark_trained("a", 5)
    assert redis_client.zscore(PENDING_KEY, "a") == 2
    scheduler.mark_trained("a", 2)
    assert redis_client.zscore(PENDING_KEY, "a") is None
