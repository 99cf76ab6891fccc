"""deploy/serve.yaml: a valid Serve config for the app, and `serve run` of it answers chat.

The end-to-end test runs the real `serve` CLI on a copy of the file whose only
change is the HTTP port (a free one: 8000 may be taken on a shared machine), with
the tiny test model on CPU and the session's redis-server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from openai import OpenAI
from ray.serve.schema import ServeDeploySchema

from commands.redis_server import RedisServer, free_port
from tests.builders import build_serving_model

REPO = Path(__file__).resolve().parents[2]
SERVE_CONFIG = REPO / "deploy" / "serve.yaml"
SERVE_CLI = Path(sys.executable).parent / "serve"
STARTUP_TIMEOUT_S = 300


def test_serve_config_validates_against_ray_serve_schema() -> None:
    config = ServeDeploySchema.model_validate(yaml.safe_load(SERVE_CONFIG.read_text()))
    (application,) = config.applications
    assert (application.name, application.route_prefix) == ("tailor", "/")
    assert application.import_path == "service.app:build_app"
    assert config.http_options.host == "0.0.0.0" and config.http_options.port == 8000


def test_serve_config_names_the_apps_deployments() -> None:
    # A deployment named in the file but not built by the app fails the deploy
    # ("Deployment ... does not exist"): the names must match build_app's.
    from ray.serve._private.build_app import build_app as build_deployments

    from service.app import build_app

    config = yaml.safe_load(SERVE_CONFIG.read_text())
    named = {deployment["name"] for deployment in config["applications"][0]["deployments"]}
    built = build_deployments(build_app({}), name="tailor")
    assert named == {deployment.name for deployment in built.deployments}
    assert built.ingress_deployment_name == "Ingress"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_serving_model(tmp_path_factory.mktemp("serve-config-model"))


@pytest.fixture
def serve_run(
    tiny_model_dir: Path, redis_server: RedisServer, redis_client, tmp_path: Path
) -> Iterator[tuple[str, Path, subprocess.Popen]]:
    """`serve run` of deploy/serve.yaml (on a free port); yields (base URL, log, process).

    ``redis_client`` flushes the shared test Redis first: a version pointer left by
    another test would name an adapter this server's store does not hold.
    """
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    port = free_port()
    config["http_options"]["port"] = port
    config_copy = tmp_path / "serve.yaml"
    config_copy.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {
        variable: value
        for variable, value in os.environ.items()
        if not variable.startswith(("TAILOR_", "RAY_")) and variable != "REDIS_URL"
    }
    # Ray's unix sockets need a short path: not pytest's deep tmp_path.
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    env |= {
        "REDIS_URL": redis_server.url,
        "TAILOR_BASE_MODEL": str(tiny_model_dir),
        "TAILOR_DEVICE": "cpu",
        "TAILOR_DATA_DIR": str(tmp_path / "tailor"),
        "TAILOR_MAX_BATCH_SIZE": "4",
        "RAY_AUTH_MODE": "disabled",
        "RAY_TMPDIR": ray_tmp,
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    log_path = tmp_path / "serve-run.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(SERVE_CLI), "run", str(config_copy)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield f"http://127.0.0.1:{port}", log_path, process
    finally:
        # Ctrl-C: `serve run` shuts Serve down and its local Ray cluster with it.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        subprocess.run(["rm", "-rf", ray_tmp], check=False)


def wait_until_ready(base_url: str, log_path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    log_tail = log_path.read_text()[-6000:]
    state = "not ready" if process.poll() is None else f"exited ({process.returncode})"
    pytest.fail(f"serve run {state}; it said:\n{log_tail}")


@pytest.mark.slow
def test_serve_run_of_deploy_config_answers_a_chat_request(
    serve_run: tuple[str, Path, subprocess.Popen],
) -> None:
    base_url, log_path, process = serve_run
    started = time.monotonic()
    wait_until_ready(base_url, log_path, process)
    startup_s = time.monotonic() - started

    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", timeout=120, max_retries=0)
    response = client.chat.completions.create(
        model="tailor-base",
        messages=[{"role": "user", "content": "how do I boil an egg"}],
        max_tokens=8,
        # Greedy: the test model's EOS never wins an argmax (tests/builders.py), so the
        # answer has text; sampled, EOS first (~1 in 400) made an empty answer.
        temperature=0,
        user="alice",
    )
    (choice,) = response.choices
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert 0 < response.usage.completion_tokens <= 8
    print(f"serve run: ready after {startup_s:.0f} s")
