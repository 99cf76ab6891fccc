"""For operators and Kubernetes: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import redis
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import BackendDep, MetricsDep, SettingsDep, StoreDep
from service.learner_metrics import learner_metrics_text

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(backend: BackendDep, store: StoreDep) -> JSONResponse:
    checks = {"model": False, "redis": False}
    try:
        checks["redis"] = await store.ping()
    except Exception:
        pass
    try:
        checks["model"] = bool(await backend.ready())
    except Exception:
        pass
    ready = all(checks.values())
    return JSONResponse({"ready": ready, **checks}, 200 if ready else 503)


@router.get("/metrics")
async def prometheus(
    settings: SettingsDep, backend: BackendDep, store: StoreDep, metrics: MetricsDep
) -> Response:
    text = generate_latest(metrics.registry)
    try:
        text += await backend.metrics_text()
    except Exception:  # generator down: still serve the ingress's own metrics
        pass
    try:
        text += await learner_metrics_text(store.client, settings.metrics_max_users)
    except redis.RedisError:  # Redis down: /readyz says so; keep serving the rest
        pass
    return Response(text, media_type=CONTENT_TYPE_LATEST)
