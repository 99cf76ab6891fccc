"""Schema-driven fuzzing of the whole HTTP API: schemathesis (its CLI: its pytest plugin does
not run on pytest 9) over /openapi.json. Whatever a client sends, valid or almost valid by
the schema, no answer is a 5xx."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contracts.settings import Settings
from tests.local_server import local_server

EXAMPLES_PER_OPERATION = 25  # every operation, positive and negative cases: ~1 min on 2 cores


@pytest.mark.slow
def test_no_fuzzed_request_gets_a_server_error(serving_model_dir: Path, redis_server,
                                               redis_client, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    # short answers: the fuzzer's chat requests would otherwise decode for long
    config = Settings(base_model=str(serving_model_dir), adapter_store=str(tmp_path / "store"),
                      data_dir=tmp_path, redis_url=redis_server.url, max_tokens_limit=8,
                      default_max_tokens=4, max_n=2)
    with local_server(config) as url:
        run = subprocess.run(
            [str(Path(sys.executable).with_name("schemathesis")), "run", f"{url}/openapi.json",
             "--checks", "not_a_server_error", "--max-examples", str(EXAMPLES_PER_OPERATION),
             "--generation-deterministic", "-H", "X-User-Id: fuzzer", "--no-color"],
            capture_output=True, text=True, timeout=540, cwd=tmp_path, check=False)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-4000:]
    cases = re.search(r"(\d+) generated", report)
    assert cases and int(cases.group(1)) >= 100, report[-2000:]  # it really ran
