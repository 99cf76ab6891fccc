"""The schemathesis fuzzer over a running Tailor's ``/openapi.json``: cases and 5xx answers.

Run through its CLI (its pytest plugin does not run on pytest 9). Every request it
sent and the status it got are read back from its HAR report, so the 5xx count is
the answers', not the fuzzer's summary line's.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class FuzzResult:
    cases: int  # test cases schemathesis generated
    requests: int  # requests it sent (a case may send more than one)
    server_errors: int  # answers with a 5xx status
    statuses: dict[str, int]
    returncode: int
    report: str  # its console output

    def summary(self) -> dict:
        return {"cases": self.cases, "requests": self.requests,
                "server_errors": self.server_errors, "statuses": self.statuses,
                "fuzzer_exit": self.returncode}


def run_fuzzer(url: str, examples_per_operation: int, work_dir: Path,
               user_id: str = "fuzzer", timeout_s: float = 540) -> FuzzResult:
    """Positive and negative cases for every operation, deterministic, as ``user_id``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    har = work_dir / "fuzz.har"
    run = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "run", f"{url}/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", str(examples_per_operation),
         "--generation-deterministic", "-H", f"X-User-Id: {user_id}", "--no-color",
         "--report", "har", "--report-har-path", str(har)],
        capture_output=True, text=True, timeout=timeout_s, cwd=work_dir, check=False)
    report = run.stdout + run.stderr
    generated = re.search(r"(\d+) generated", report)
    statuses: dict[str, int] = {}
    if har.is_file():
        for entry in json.loads(har.read_text())["log"]["entries"]:
            status = str(entry["response"]["status"])
            statuses[status] = statuses.get(status, 0) + 1
    return FuzzResult(
        cases=int(generated.group(1)) if generated else 0, requests=sum(statuses.values()),
        server_errors=sum(n for status, n in statuses.items() if status.startswith("5")),
        statuses=dict(sorted(statuses.items())), returncode=run.returncode, report=report)
