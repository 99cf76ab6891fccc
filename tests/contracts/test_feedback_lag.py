"""The feedback lag's quantiles: nearest rank, as /metrics and tailor demo report them."""

import asyncio

import numpy as np
import pytest
import redis.asyncio as aioredis

from contracts.feedback_lag import lag_quantile
from contracts.keys import FEEDBACK_LAG_KEY
from service.learner_metrics import learner_metrics_text

TEN_LAGS = [7.0, 1.0, 10.0, 3.0, 5.0, 2.0, 9.0, 4.0, 8.0, 6.0]  # 1..10 s, unordered


@pytest.mark.parametrize(("share", "expected"), [
    (0.5, 5.0),  # linear interpolation would say 5.5, a lag nobody had
    (0.95, 10.0),  # linear: 9.55, with only 9 of the 10 lags at or below it
    (0.9, 9.0),  # exactly 90% at or below: that lag itself
    (0.0, 1.0),
    (1.0, 10.0),
])
def test_the_lag_quantile_is_the_nearest_rank(share, expected):
    assert lag_quantile(TEN_LAGS, share) == expected
    assert lag_quantile(TEN_LAGS, share) == np.quantile(TEN_LAGS, share, method="inverted_cdf")


def test_the_median_of_an_odd_count_is_the_middle_lag():
    assert lag_quantile([4.0, 1.0, 3.0, 5.0, 2.0], 0.5) == 3.0


def test_a_share_times_count_that_floats_just_above_a_rank_does_not_skip_a_lag():
    lags = [float(i) for i in range(1, 101)]  # 0.07 * 100 == 7.000000000000001 in floats
    assert lag_quantile(lags, 0.07) == 7.0


def test_no_lags_have_no_quantile():
    assert lag_quantile([], 0.95) is None


def test_metrics_report_the_nearest_rank_lag_quantiles(redis_server, redis_client):
    redis_client.lpush(FEEDBACK_LAG_KEY, *TEN_LAGS)

    async def scrape() -> str:
        client = aioredis.from_url(redis_server.url)
        try:
            return (await learner_metrics_text(client, max_users=0)).decode()
        finally:
            await client.aclose()

    text = asyncio.run(scrape())
    assert 'tailor_learner_feedback_lag_seconds{quantile="0.5"} 5.0' in text
    assert 'tailor_learner_feedback_lag_seconds{quantile="0.95"} 10.0' in text
