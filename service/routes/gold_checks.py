"""``/v1/users/{user_id}/gold-checks``: answers whose verdict is known, for raters to judge.

Now and then a client shows its user one of these instead of nothing (the page does,
after every tenth judgment): an answer from the written principles to judge as harmless
or honest. The user's verdict is kept beside the known one; the learners weigh how
reliable the user's judgments are by it (``contracts.gold_checks``). The verdict is
never sent: a rater cannot tell a check's truth from its id.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from fastapi import APIRouter, Request, Response

from contracts.gold_checks import GoldAnswer, GoldCheck, gold_deck, next_check
from contracts.principles_file import load_principles
from service.deps import CallerDep, SettingsDep, StoreDep
from service.errors import APIError
from service.routes.users import own_user
from service.schemas import GoldCheckAnswer, GoldCheckAnswered, GoldCheckView

log = logging.getLogger(__name__)

router = APIRouter(tags=["gold checks"])

QUESTIONS = {
    "harmless": "Is this answer harmless: no insults, no help with harm?",
    "honest": "Is this answer honest: no myth or falsehood stated as fact?",
}


@router.get("/v1/users/{user_id}/gold-checks/next")
async def next_gold_check(user_id: str, request: Request, caller: CallerDep,
                          store: StoreDep, settings: SettingsDep) -> GoldCheckView:
    own_user(user_id, caller)
    deck = _deck(request, settings.principles_path)
    check = None
    if deck:
        summary = await store.user_summary(user_id) or {}
        judged = {c.criterion: int(summary.get(f"criterion:{c.criterion}", 0)) for c in deck}
        check = next_check(deck, user_id, await store.gold_answered(user_id), judged)
    if check is None:
        raise APIError(404, "no gold check left for you" if deck else
                       "this server has no gold checks (no principles file)",
                       code="no_gold_check")
    return GoldCheckView(id=check.id, criterion=check.criterion,
                         question=QUESTIONS.get(check.criterion, check.principle),
                         prompt=check.prompt, answer=check.answer)


@router.post("/v1/users/{user_id}/gold-checks/{check_id}", status_code=201)
async def answer_gold_check(user_id: str, check_id: str, body: GoldCheckAnswer,
                            request: Request, response: Response, caller: CallerDep, store: StoreDep,
                            settings: SettingsDep) -> GoldCheckAnswered:
    own_user(user_id, caller)
    check = {c.id: c for c in _deck(request, settings.principles_path)}.get(check_id)
    if check is None:
        raise APIError(404, f"no gold check {check_id[:40]!r}; take one from GET "
                       f"/v1/users/{user_id}/gold-checks/next", param="check_id",
                       code="gold_check_not_found")
    answer = GoldAnswer(check.id, check.criterion, check.fine, body.thumb == "up", time.time())
    recorded = await store.record_gold_answer(user_id, answer)
    if not recorded:
        response.status_code = 200
    return GoldCheckAnswered(check_id=check.id, duplicate=not recorded)


def _deck(request: Request, path: Path | None) -> list[GoldCheck]:
    """The principles' checks, read again when the file changes (the learners refit
    their prior then too); none while the file is missing or invalid (logged)."""
    state = request.app.state
    if path is None:
        return []
    try:
        stamp = (str(path), path.stat().st_mtime_ns)
    except OSError as error:
        log.warning("gold checks: principles file unreadable: %s", error)
        return []
    if getattr(state, "gold_deck_stamp", None) != stamp:
        try:
            state.gold_deck = gold_deck(load_principles(path))
        except ValueError as error:
            log.warning("gold checks: %s", error)
            state.gold_deck = []
        state.gold_deck_stamp = stamp
    return state.gold_deck
