"""`tailor check-faults` (`make check-faults`): a Tailor of its own under load and faults.

Starts a redis-server (``appendfsync always``, free port, a fresh data folder), then
``tailor up --no-learners`` against it, runs ``benchmarks.faults.suite``, stops Tailor
with SIGTERM (its graceful shutdown) and Redis last, prints the tables and, when
asked, writes the figures as JSON. Exit status 1 when a promise was not kept.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from rich.console import Console

from benchmarks.faults.report import print_report
from benchmarks.faults.stack import TailorProcess, free_port
from benchmarks.faults.suite import SuiteConfig, run_suite
from commands.redis_server import RedisServer


def run_check_faults(config: SuiteConfig, console: Console, json_path: Path | None = None,
                     keep: bool = False) -> bool:
    """Run the suite; True when every part kept its promise."""
    work_dir = Path(tempfile.mkdtemp(prefix="tailor-faults-"))
    config.work_dir = work_dir
    redis_server = RedisServer(free_port(), work_dir / "redis", fsync="always")
    tailor = TailorProcess(work_dir / "tailor", redis_server.url, config.tailor_env())
    try:
        redis_server.start()
        with console.status("starting `tailor up --no-learners` ..."):
            tailor.start()
        results = run_suite(tailor, redis_server, config,
                            progress=lambda line: console.print(f"[bold]>[/] {line}"))
        exit_status = tailor.stop()
        results["shutdown"] = {"exit_status": exit_status, "ok": exit_status == 0}
    finally:
        tailor.stop()
        redis_server.stop()
        if not keep:
            log = tailor.log_path.read_text() if tailor.log_path.is_file() else ""
            shutil.rmtree(work_dir, ignore_errors=True)
    print_report(results, console)
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2))
        console.print(f"figures written to {json_path}")
    if keep:
        console.print(f"logs and data kept in {work_dir}")
    elif not all(part["ok"] for part in results.values()):
        console.print("[red]a promise was not kept[/]; the end of `tailor up`'s log:")
        console.print(log[-3000:], markup=False)
    return all(part["ok"] for part in results.values())
