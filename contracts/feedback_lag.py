"""The feedback lag's quantiles, one definition for ``/metrics`` and ``tailor demo``.

The feedback lag is the time from a feedback event accepted to an adapter trained
on it published; the learners record one per event (``FEEDBACK_LAG_KEY``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def lag_quantile(lags: Sequence[float], share: float) -> float | None:
    """The nearest-rank ``share`` quantile of ``lags``: the smallest lag with at least
    ``share`` of all lags at or below it (None when there are none).

    Nearest rank (Hyndman & Fan's type 1; numpy's ``method="inverted_cdf"``), not
    numpy's default linear interpolation, because the number is read as "95% of
    feedback was trained on within p95": nearest rank makes that true at any sample
    size and reports a lag that happened. Interpolation reports a lag between two
    observed ones, and in a small window one below the share (of 10 lags, only 9 are
    at or below its 0.95 quantile). It is also what a Prometheus user expects of a
    ``quantile`` label: a summary's quantiles are observed values.
    """
    if not lags:
        return None
    ordered = sorted(lags)
    # Rounded first: share * n in floats can land just above a whole rank
    # (0.07 * 100 == 7.000000000000001), and ceil would then skip a lag (numpy's
    # inverted_cdf does: it returns the 8th of 1..100 as the 0.07 quantile).
    rank = max(1, math.ceil(round(share * len(ordered), 9)))
    return ordered[rank - 1]
