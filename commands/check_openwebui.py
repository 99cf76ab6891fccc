"""`make check-openwebui`: the real Open WebUI, rating a Tailor answer, and the rating in Tailor.

Not part of `make test` (it installs Open WebUI, ~260 packages, into a venv of its
own and starts two servers). Steps, each printed with the time it took:

1. start Tailor (`tailor up --no-learners` with a gateway key and the Open WebUI
   secret, its own Redis and data folder), or use one already running (--tailor-url);
2. start Open WebUI with the settings of README "Use it with Open WebUI", offline,
   with its data in a temporary folder;
3. sign up (the first user is Open WebUI's admin) and install Tailor's function
   (deploy/openwebui/tailor_feedback.py) with its valves, through Open WebUI's API;
4. chat through Open WebUI's API (`POST /api/chat/completions`): the request reaches
   Tailor with the user's and the message's headers;
5. rate the answer through Open WebUI's evaluations API as its chat page does: a
   thumb, then the 1-10 form with a reason and a comment, then the same again;
6. poll Tailor's `GET /v1/users/{id}` and its feedback stream until the rating is
   there, and check the resend was recorded once.

Exit status 0 when the rating arrived, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis

from commands.redis_server import free_port
from contracts.keys import FEEDBACK_STREAM, openwebui_message_key

ROOT = Path(__file__).resolve().parents[1]
FUNCTION_FILE = ROOT / "deploy" / "openwebui" / "tailor_feedback.py"
FUNCTION_ID = "tailor_feedback"
MODEL = "tailor-base"

# The connection's header template (README): the message each answer fills, and the
# task ({{TASK}} is empty for the answer itself, set for titles, tags, follow-ups).
HEADER_TEMPLATE = {"X-OpenWebUI-Message-Id": "{{MESSAGE_ID}}", "X-OpenWebUI-Task": "{{TASK}}"}


class CheckFailed(RuntimeError):
    pass


class Steps:
    """Prints each step with the seconds it took and the total."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()

    def done(self, what: str) -> None:
        now = time.monotonic()
        print(f"[{now - self.started:7.1f} s] (+{now - self.last:5.1f} s) {what}", flush=True)
        self.last = now


def openwebui_environment(data_dir: Path, port: int, tailor_url: str, gateway_key: str) -> dict:
    """Open WebUI's settings for Tailor (README "Use it with Open WebUI"), offline."""
    return {
        **os.environ,
        # the connection to Tailor
        "OPENAI_API_BASE_URLS": f"{tailor_url}/v1",
        "OPENAI_API_KEYS": gateway_key,
        "OPENAI_API_CONFIGS": json.dumps({"0": {"enable": True, "headers": HEADER_TEMPLATE}}),
        "ENABLE_OLLAMA_API": "false",
        "ENABLE_FORWARD_USER_INFO_HEADERS": "true",
        # background tasks would ask Tailor too, under the user (README)
        "ENABLE_TITLE_GENERATION": "false",
        "ENABLE_TAGS_GENERATION": "false",
        "ENABLE_FOLLOW_UP_GENERATION": "false",
        # this machine reaches no model hub: no embedding model, no update check
        "OFFLINE_MODE": "true",
        "HF_HUB_OFFLINE": "1",
        "RAG_EMBEDDING_ENGINE": "openai",
        "BYPASS_EMBEDDING_AND_RETRIEVAL": "true",
        "ENABLE_VERSION_UPDATE_CHECK": "false",
        "DATA_DIR": str(data_dir),
        "WEBUI_SECRET_KEY": secrets.token_hex(32),
        "PORT": str(port),
        "GLOBAL_LOG_LEVEL": "WARNING",
    }


def wait_for(url: str, process: subprocess.Popen | None, log: Path | None, timeout_s: float,
             what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise CheckFailed(f"{what} exited with {process.returncode}:\n{tail(log)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise CheckFailed(f"{what} not ready at {url} after {timeout_s:.0f} s:\n{tail(log)}")


def tail(log: Path | None, lines: int = 40) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    # a session of its own: stopping it stops what it started (Ray's processes too)
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=log.parent)


def stop(process: subprocess.Popen | None, grace_s: float = 60) -> None:
    """SIGINT to the command (tailor up then stops Serve, Ray and its Redis in that order),
    then whatever is left of the session it started."""
    if process is None:
        return
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def expect(response: httpx.Response, what: str) -> dict | list:
    if response.status_code != 200:
        raise CheckFailed(f"{what}: HTTP {response.status_code} {response.text[:500]}")
    return response.json()


def run(args: argparse.Namespace) -> None:
    steps = Steps()
    work = Path(tempfile.mkdtemp(prefix="tailor-owui-"))
    gateway_key = args.gateway_key or "sk-owui-" + secrets.token_hex(16)
    secret = args.secret or secrets.token_hex(32)
    tailor = openwebui = None
    try:
        # 1. Tailor
        if args.tailor_url:
            tailor_url, redis_url = args.tailor_url.rstrip("/"), args.redis_url
            print(f"using the Tailor at {tailor_url}")
        else:
            port, redis_port = free_port(), free_port()
            tailor_url, redis_url = f"http://127.0.0.1:{port}", f"redis://127.0.0.1:{redis_port}/0"
            env = {k: v for k, v in os.environ.items()
                   if k not in ("REDIS_URL", "TAILOR_REDIS_URL")}  # its own Redis
            env.update({"TAILOR_PORT": str(port), "TAILOR_REDIS_PORT": str(redis_port),
                        "TAILOR_DATA_DIR": str(work / "tailor"),
                        "TAILOR_GATEWAY_KEYS": json.dumps([gateway_key]),
                        "TAILOR_OPENWEBUI_SECRET": secret})
            (work / "tailor").mkdir()
            tailor_cli = Path(sys.executable).with_name("tailor")
            tailor = start([str(tailor_cli), "up", "--no-learners"], env, work / "tailor.log")
        wait_for(f"{tailor_url}/readyz", tailor, work / "tailor.log", 600, "Tailor")
        steps.done(f"Tailor ready at {tailor_url}")

        # 2. Open WebUI
        owui_port = free_port()
        owui_url = f"http://127.0.0.1:{owui_port}"
        env = openwebui_environment(work / "open-webui", owui_port, tailor_url, gateway_key)
        (work / "open-webui").mkdir()
        openwebui = start([str(Path(args.open_webui).resolve()), "serve", "--host", "127.0.0.1", "--port",
                           str(owui_port)], env, work / "open-webui.log")
        wait_for(f"{owui_url}/health", openwebui, work / "open-webui.log", 600, "Open WebUI")
        version = expect(httpx.get(f"{owui_url}/api/version"), "version")["version"]
        steps.done(f"Open WebUI {version} ready at {owui_url}")

        # 3. sign up, install Tailor's function
        signup = expect(httpx.post(f"{owui_url}/api/v1/auths/signup", json={
            "name": "Ada", "email": "ada@example.com",
            "password": "Tailor-check-" + secrets.token_hex(8)}), "sign up")
        user_id, role = signup["id"], signup["role"]
        owui = httpx.Client(base_url=owui_url, timeout=120,
                            headers={"Authorization": f"Bearer {signup['token']}"})
        steps.done(f"signed up Ada: Open WebUI user {user_id} ({role})")
        expect(owui.post("/api/v1/functions/create", json={
            "id": FUNCTION_ID, "name": "Tailor feedback", "content": FUNCTION_FILE.read_text(),
            "meta": {"description": "Sends message ratings to Tailor"}}), "create function")
        expect(owui.post(f"/api/v1/functions/id/{FUNCTION_ID}/valves/update",
                         json={"tailor_url": tailor_url, "secret": secret}), "function valves")
        function = expect(owui.post(f"/api/v1/functions/id/{FUNCTION_ID}/toggle"), "toggle")
        if not function.get("is_active") or function.get("type") != "event":
            raise CheckFailed(f"function not an active event function: {function}")
        models = [m["id"] for m in expect(owui.get("/api/models"), "models")["data"]]
        if MODEL not in models:
            raise CheckFailed(f"Open WebUI does not list {MODEL} from Tailor: {models}")
        steps.done(f"installed function {FUNCTION_ID!r} (event, active); models: {models}")

        # 4. chat through Open WebUI
        question = {"id": str(uuid.uuid4()), "role": "user", "content": "how do I boil an egg",
                    "timestamp": int(time.time())}
        chat = expect(owui.post("/api/v1/chats/new", json={"chat": {
            "title": "Eggs", "models": [MODEL], "messages": [question],
            "history": {"messages": {question["id"]: question}, "currentId": question["id"]},
        }}), "new chat")
        message_id = str(uuid.uuid4())
        answer = expect(owui.post("/api/chat/completions", json={
            "model": MODEL, "stream": False, "chat_id": chat["id"], "id": message_id,
            "messages": [{"role": "user", "content": question["content"]}],
        }), "chat completion")
        text = answer["choices"][0]["message"]["content"]
        steps.done(f"chat {chat['id']}: message {message_id} answered by Tailor's "
                   f"{answer['id']} ({answer.get('system_fingerprint')}): {text[:60]!r}")
        store = redis.Redis.from_url(redis_url) if redis_url else None
        if store is not None:
            linked = store.get(openwebui_message_key(user_id, message_id))
            if linked is None or linked.decode() != answer["id"]:
                raise CheckFailed(f"Tailor has no link from message {message_id}: {linked}")
            steps.done(f"Tailor linked Open WebUI message {message_id} -> {linked.decode()}")

        # 5. rate it as the chat page does (ResponseMessage.svelte, RateComment.svelte)
        meta = {"arena": False, "model_id": MODEL, "message_id": message_id,
                "message_index": 2, "chat_id": chat["id"]}
        thumb = {"type": "rating", "data": {"rating": 1, "model_id": MODEL}, "meta": meta,
                 "snapshot": {"chat": chat}}
        feedback = expect(owui.post("/api/v1/evaluations/feedback", json=thumb), "thumb")
        steps.done(f"thumb up through Open WebUI: feedback {feedback['id']}")
        form = {**thumb, "data": {**thumb["data"], "details": {"rating": 8},
                                  "reason": "accurate_information",
                                  "comment": "short and right"}}
        expect(owui.post(f"/api/v1/evaluations/feedback/{feedback['id']}", json=form), "rating")
        steps.done("rated 8/10, reason accurate_information, comment, through Open WebUI")

        # 6. the rating in Tailor
        tailor_http = httpx.Client(base_url=tailor_url, timeout=30, headers={
            "Authorization": f"Bearer {gateway_key}", "X-OpenWebUI-User-Id": user_id})
        counts = poll_counts(tailor_http, user_id, lambda c: c["total"] >= 3, 90)
        steps.done(f"Tailor GET /v1/users/{user_id}: {json.dumps(counts)}")
        duplicates = duplicates_seen(tailor_http)
        expect(owui.post(f"/api/v1/evaluations/feedback/{feedback['id']}", json=form), "resend")
        deadline = time.monotonic() + 30  # the function posts in the background
        while duplicates_seen(tailor_http) < duplicates + 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        if duplicates_seen(tailor_http) < duplicates + 2:
            raise CheckFailed("the resent rating did not reach Tailor as 2 duplicates")
        again = poll_counts(tailor_http, user_id, lambda c: True, 10)
        if again != counts:
            raise CheckFailed(f"the resent rating changed the counts: {again}")
        steps.done("the same rating sent again through Open WebUI: reached Tailor as 2 "
                   "duplicates (tailor_feedback_events_total), counts unchanged")
        if store is not None:
            for entry_id, fields in store.xrange(FEEDBACK_STREAM):
                event = {k.decode(): v.decode() for k, v in fields.items()}
                if event["user_id"] == user_id:
                    shown = {k: event[k] for k in ("type", "value", "score", "criterion",
                                                   "comment", "completion_id") if k in event}
                    print(f"    stream {FEEDBACK_STREAM} {entry_id.decode()}: {shown}")
        expected = {"thumbs_up": 2, "scores": 1, "total": 3}
        if {k: counts[k] for k in expected} != expected or counts["by_criterion"] != {
                "helpful": 1, "honest": 2}:
            raise CheckFailed(f"unexpected counts: {counts}; wanted {expected}, "
                              "by_criterion helpful 1, honest 2")
        steps.done("OK: Open WebUI's rating reached Tailor")
    finally:
        stop(openwebui, grace_s=20)
        stop(tailor)
        print(f"logs in {work}")


def duplicates_seen(client: httpx.Client) -> float:
    """Judgments Tailor found already recorded (its /metrics counter)."""
    text = expect_text(client.get("/metrics"), "metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("tailor_feedback_events_total{")
               and 'outcome="duplicate"' in line)


def expect_text(response: httpx.Response, what: str) -> str:
    if response.status_code != 200:
        raise CheckFailed(f"{what}: HTTP {response.status_code} {response.text[:500]}")
    return response.text


def poll_counts(client: httpx.Client, user_id: str, ready, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    counts: dict = {}
    while time.monotonic() < deadline:
        response = client.get(f"/v1/users/{user_id}")
        if response.status_code == 200:
            counts = response.json()["feedback"]
            if ready(counts):
                return counts
        time.sleep(1)
    raise CheckFailed(f"the rating did not reach Tailor in {timeout_s:.0f} s: {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--open-webui", default=str(ROOT / ".openwebui-venv/bin/open-webui"),
                        help="The open-webui command (of its own venv).")
    parser.add_argument("--tailor-url", help="Use this running Tailor instead of starting one.")
    parser.add_argument("--redis-url", help="With --tailor-url: its Redis, to show the stream.")
    parser.add_argument("--gateway-key", help="With --tailor-url: one of its gateway keys.")
    parser.add_argument("--secret", help="With --tailor-url: its TAILOR_OPENWEBUI_SECRET.")
    args = parser.parse_args()
    if args.tailor_url and not (args.gateway_key and args.secret):
        parser.error("--tailor-url needs --gateway-key and --secret (Tailor's settings)")
    try:
        run(args)
    except CheckFailed as err:
        print(f"FAILED: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
