"""Which user next, and leases that keep a user to one worker."""

import time

import pytest

from contracts.keys import PENDING_KEY, PENDING_SINCE_KEY, lease_key
from learners.scheduler import LeaseLost, Scheduler


def arrive(client, user: str, examples: int, at: float) -> None:
    """What the feedback consumer does for each applied example (learners.feedback_consumer)."""
    client.zincrby(PENDING_KEY, examples, user)
    client.zadd(PENDING_SINCE_KEY, {user: at}, nx=True)


def test_candidates_need_min_feedback_and_come_most_pending_first_when_all_waited_alike(
        redis_client):
    redis_client.zadd(PENDING_KEY, {"a": 2, "b": 9, "c": 5})
    assert Scheduler(redis_client, min_feedback=4, lease_s=10).candidates() == ["b", "c"]


def test_the_longest_waiting_user_goes_first_and_more_pending_at_most_doubles_priority(
        redis_client):
    arrive(redis_client, "patient", 4, at=100.0)  # waited 10 s at t = 110
    arrive(redis_client, "flooder", 5000, at=106.0)  # 4 s × 2 = 8 < 10 s × (1 + 4/64)
    arrive(redis_client, "newcomer", 4, at=109.0)
    scheduler = Scheduler(redis_client, min_feedback=4, lease_s=10)
    assert scheduler.candidates(now=110.0) == ["patient", "flooder", "newcomer"]
    arrive(redis_client, "flooder", 10, at=0.0)  # NX: its oldest pending still counts
    assert scheduler.candidates(now=110.0)[0] == "patient"
    assert scheduler.candidates(now=113.0)[0] == "flooder"  # 7 s × 2 > 13 s × (1 + 4/64)


def test_a_flooding_user_cannot_starve_the_rest_and_no_ready_user_waits_past_the_bound(
        redis_client):
    """One worker, one update per second; 20 ordinary users who send 4 judgments, and
    again 7 s after each update of theirs; one user who sends 50 every second."""
    scheduler = Scheduler(redis_client, min_feedback=4, lease_s=10)
    ordinary = [f"user{i}" for i in range(20)]
    ready_at = dict.fromkeys(ordinary, 0.0)
    for user in ordinary:
        arrive(redis_client, user, 4, 0.0)
    comes_back: dict[str, float] = {}
    waits, trained = [], []
    for step in range(400):
        now = float(step)
        arrive(redis_client, "flooder", 50, now)
        for user, at in list(comes_back.items()):
            if at <= now:
                del comes_back[user]
                ready_at[user] = now
                arrive(redis_client, user, 4, now)
        user = scheduler.candidates(now=now)[0]
        trained.append(user)
        scheduler.mark_trained(user, int(redis_client.zscore(PENDING_KEY, user)), started_at=now)
        if user in ready_at:
            waits.append(now - ready_at.pop(user))
            comes_back[user] = now + 7
    # learners.scheduler proves w <= (R - 1)(2 + log2 w), ~190 updates for R = 21; measured
    # 23: held here at three rounds of everyone, so a drift toward the bound shows
    bound = 3 * (len(ordinary) + 1 - 1)
    assert max(waits) <= bound, (max(waits), bound)
    assert min(trained.count(user) for user in ordinary) >= 10, trained  # nobody starved
    flooder_share = trained.count("flooder") / len(trained)
    assert flooder_share <= 0.25, flooder_share  # measured 0.11; by pending count alone: 1.0


def test_a_user_is_leased_to_one_worker_at_a_time(redis_client):
    redis_client.zadd(PENDING_KEY, {"a": 5, "b": 4})
    first, second = Scheduler(redis_client, 4, 10), Scheduler(redis_client, 4, 10)
    with first.next_users(1) as one, second.next_users(1) as two:
        assert one[0][0] == "a" and two[0][0] == "b"
        with Scheduler(redis_client, 4, 10).next_users(1) as three:
            assert three == []
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


def test_workers_share_the_ready_users_out_rather_than_one_batching_them_all(redis_client):
    """K = 8, two workers, five ready users: the first leases three (its share, rounded up),
    the second the other two, instead of one worker training all five while the other
    waits; the neediest go first."""
    for i, user in enumerate(["u0", "u1", "u2", "u3", "u4"]):
        arrive(redis_client, user, 4, at=100.0 + i)
    first = Scheduler(redis_client, min_feedback=4, lease_s=10)
    second = Scheduler(redis_client, min_feedback=4, lease_s=10)
    with first.next_users(8, workers=2) as mine, second.next_users(8, workers=2) as theirs:
        assert [user for user, _ in mine] == ["u0", "u1", "u2"]
        assert [user for user, _ in theirs] == ["u3", "u4"]
    with first.next_users(8, workers=1) as alone:  # the leases came back; one worker takes all
        assert len(alone) == 5
