"""Schema-driven fuzzing of the whole HTTP API: schemathesis over /openapi.json
(``benchmarks.faults.fuzz``, which `tailor check-faults` runs through Ray Serve too).
Whatever a client sends, valid or almost valid by the schema, no answer is a 5xx."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.faults.fuzz import run_fuzzer
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
        fuzzed = run_fuzzer(url, EXAMPLES_PER_OPERATION, tmp_path / "fuzz")
    assert fuzzed.returncode == 0, fuzzed.report[-4000:]
    assert fuzzed.server_errors == 0, (fuzzed.statuses, fuzzed.report[-4000:])
    assert fuzzed.cases >= 100 and fuzzed.requests >= fuzzed.cases, fuzzed.report[-2000:]  # it ran
