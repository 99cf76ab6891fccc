"""``/v1/users/{user_id}``: what Tailor holds about you, and forgetting it.

Only the user themself may see or forget their data.
"""

from __future__ import annotations

from fastapi import APIRouter

from contracts.records import SHARED_CRITERIA
from service.deps import AdapterStoreDep, CallerDep, SettingsDep, StoreDep
from service.errors import APIError
from service.identity import validate_user_id
from service.schemas import (
    FeedbackCounts,
    JudgmentsInHour,
    RaterStanding,
    TrainingStatus,
    UserForgotten,
    UserView,
)

router = APIRouter(tags=["users"])


@router.get("/v1/users/{user_id}")
async def get_user(user_id: str, caller: CallerDep, store: StoreDep,
                   settings: SettingsDep) -> UserView:
    own_user(user_id, caller)
    summary = await store.user_summary(user_id)
    if summary is None:
        raise APIError(404, f"no data for user {user_id!r}", param="user_id",
                       code="user_not_found")
    view = user_view(user_id, summary, await store.adapter_version(user_id),
                     settings.learner_min_feedback)
    view.history = [JudgmentsInHour(hour=hour, judgments=count)
                    for hour, count in (await store.user_history(user_id)).items()]
    return view


@router.delete("/v1/users/{user_id}")
async def forget_user(
    user_id: str, caller: CallerDep, store: StoreDep, adapter_store: AdapterStoreDep
) -> UserForgotten:
    own_user(user_id, caller)
    await store.forget_user(user_id)
    adapter_store.delete_user(user_id)
    return UserForgotten(user_id=user_id)


def own_user(user_id: str, caller: str | None) -> None:
    validate_user_id(user_id, "user_id")
    if caller is None:
        raise APIError(401, "identify yourself (API key or X-User-Id) to act on a user")
    if caller != user_id:
        raise APIError(403, f"you can only act on your own user, not {user_id!r}",
                       code="not_your_user")


def user_view(user_id: str, summary: dict[str, str], adapter_version: str | None,
              min_feedback: int) -> UserView:
    counts = FeedbackCounts(
        thumbs_up=int(summary.get("thumbs_up", 0)),
        thumbs_down=int(summary.get("thumbs_down", 0)),
        rankings=int(summary.get("rankings", 0)),
        scores=int(summary.get("scores", 0)),
        corrections=int(summary.get("corrections", 0)),
        total=int(summary.get("feedback_events", 0)),
        gold_checks=int(summary.get("gold_checks_answered", 0)),
        by_criterion={k.removeprefix("criterion:"): int(v)
                      for k, v in summary.items() if k.startswith("criterion:")},
    )
    learner = {
        k.removeprefix("learner_"): _number(v)
        for k, v in summary.items() if k.startswith("learner_")
    }
    # Each judgment becomes one training example; the learners update a user once
    # min_feedback of them are untrained (learners.scheduler).
    pending = max(0, counts.total - int(summary.get("learner_examples_trained", 0)))
    training = TrainingStatus(pending=pending, until_next_update=max(0, min_feedback - pending))
    rater = {
        criterion: RaterStanding(
            reliability=_float(summary.get(f"learner_reliability_{criterion}")),
            judgments_used=int(float(summary.get(f"learner_shared_judgments_{criterion}", 0))),
            gold_checks_used=int(float(summary.get(f"learner_gold_checks_{criterion}", 0))))
        for criterion in SHARED_CRITERIA
        if f"learner_shared_judgments_{criterion}" in summary
    }
    return UserView(user_id=user_id, adapter_version=adapter_version, feedback=counts,
                    training=training, rater=rater, learner=learner)


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


def _number(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value
