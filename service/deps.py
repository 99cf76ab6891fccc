"""What the routes depend on, as ``Annotated[..., Depends(...)]`` aliases.

``create_api`` puts the settings (validated once by the application builder),
the generation backend and the feedback store on ``app.state``; a route names
what it needs (``settings: SettingsDep``, ``caller: CallerDep``) instead of
closing over them, so each router is a module of its own and a test can build
an app with any backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Protocol

from fastapi import Depends, Request

from contracts.adapter_store import AdapterStore
from contracts.settings import Settings
from service.engine_interface import GenerationEvent, GenerationRequest
from service.feedback_store import FeedbackStore
from service.identity import resolve_user
from service.metrics import IngressMetrics


class GenerationBackend(Protocol):
    """The Generator: its Ray Serve handle in production, a ``GeneratorCore`` in tests."""

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]: ...

    async def ready(self) -> bool: ...

    async def metrics_text(self) -> bytes: ...


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _backend(request: Request) -> GenerationBackend:
    return request.app.state.backend


def _store(request: Request) -> FeedbackStore:
    return request.app.state.store


def _adapter_store(request: Request) -> AdapterStore:
    return request.app.state.adapter_store


def _metrics(request: Request) -> IngressMetrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(_settings)]
BackendDep = Annotated[GenerationBackend, Depends(_backend)]
StoreDep = Annotated[FeedbackStore, Depends(_store)]
AdapterStoreDep = Annotated[AdapterStore, Depends(_adapter_store)]
MetricsDep = Annotated[IngressMetrics, Depends(_metrics)]


def _caller(request: Request, settings: SettingsDep) -> str | None:
    return resolve_user(settings, request.headers)


# The user the request's credentials or trusted headers name; None when they name
# none (chat then falls back to the body's ``user``, the least trusted source).
CallerDep = Annotated[str | None, Depends(_caller)]
