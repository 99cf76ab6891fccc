"""The `tailor` command as a person uses it (typer's runner, a real Redis)."""

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from commands.cli import app
from tests.builders import UNSERVABLE, adapter_with_config, one_line

runner = CliRunner()


def test_adapter_publish_makes_the_adapter_current(redis_server, redis_client, adapter_dirs,
                                                   tmp_path, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("TAILOR_ADAPTER_STORE", str(tmp_path / "store"))
    result = runner.invoke(app, ["adapter", "publish", "--user", "alice", str(adapter_dirs[0])])
    assert result.exit_code == 0, result.output
    version = redis_client.hget("tailor:adapter:alice", "version").decode()
    assert f"published alice -> {version}" in result.output
    assert (tmp_path / "store" / "alice" / version / "adapter_model.safetensors").is_file()


def test_adapter_publish_of_a_folder_without_an_adapter_says_how_to_fix_it(
        redis_server, redis_client, tmp_path, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("TAILOR_ADAPTER_STORE", str(tmp_path / "store"))
    result = runner.invoke(app, ["adapter", "publish", "--user", "alice", str(tmp_path)])
    assert result.exit_code == 2
    assert "save it with peft's save_pretrained" in " ".join(result.output.split())
    assert list(redis_client.scan_iter()) == []  # nothing changed


def test_adapter_publish_without_redis_names_the_setting(tmp_path, adapter_dirs, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("TAILOR_ADAPTER_STORE", str(tmp_path / "store"))
    result = runner.invoke(app, ["adapter", "publish", "--user", "alice", str(adapter_dirs[0])])
    assert result.exit_code == 2 and "REDIS_URL" in result.output


@pytest.mark.parametrize("name", UNSERVABLE)
def test_adapter_publish_refuses_an_adapter_the_server_cannot_serve(
        name, redis_server, redis_client, adapter_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("TAILOR_ADAPTER_STORE", str(tmp_path / "store"))
    fields, words = UNSERVABLE[name]
    folder = adapter_with_config(adapter_dirs[0], tmp_path / name, **fields)
    result = runner.invoke(app, ["adapter", "publish", "--user", "alice", str(folder)])
    assert result.exit_code == 2, result.output
    for word in words:
        assert word in one_line(result.output)
    assert list(redis_client.scan_iter()) == [] and not (tmp_path / "store").exists()


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    for command in ("up", "learn", "simulate", "eval-reward", "model", "adapter", "bench"):
        assert command in result.output


# The README's Commands table, plus `eval-reward` (documented under Results). Commands are
# registered in two ways (decorators, and _register_commands for those defined beside their
# code); one dropped from either would still be named in the top-level help's docstring.
DOCUMENTED_COMMANDS = [
    ["up"], ["learn"], ["model", "build"], ["adapter", "publish"], ["simulate"], ["demo"],
    ["eval-reward"], ["bench", "serve"], ["bench", "learn"], ["check-faults"],
]


@pytest.mark.parametrize("command", DOCUMENTED_COMMANDS, ids=" ".join)
def test_every_documented_command_is_registered_and_answers_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    # click's usage line names the command path, so this is the command's own help
    assert f"{' '.join(command)} [OPTIONS]" in one_line(result.output)


def test_an_invalid_setting_is_a_message_naming_the_variable_and_the_fix():
    env = {**os.environ, "TAILOR_LEARNER_KL_BOUND": "-1", "TAILOR_LEARNER_MIN_FEEDBACK": "zero"}
    done = subprocess.run([sys.executable, "-m", "commands.cli", "up"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert ("TAILOR_LEARNER_KL_BOUND=-1: Input should be greater than 0. Set a valid value, "
            "or unset it for the default (12.0).") in done.stderr
    assert "TAILOR_LEARNER_MIN_FEEDBACK=zero: Input should be a valid integer" in done.stderr
