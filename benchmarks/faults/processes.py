"""Resident memory of every process of a running Tailor: the runner, Ray's and Redis.

A process is named by what it does (Ray sets each worker's title, e.g.
``ray::ServeReplica:tailor:Generator``), not by its pid: a killed replica comes back
with another pid, and its memory at the end is compared with its memory at the start.
"""

from __future__ import annotations

import re

import psutil

MIB = 1024 * 1024
ROLE_NAMES = {"commands.cli": "tailor up (driver)", "monitor.py": "ray monitor"}


def role(process: psutil.Process) -> str:
    """A stable name for ``process``: the Serve replica or Ray part it is, else its program."""
    try:
        args = process.cmdline()
        command = " ".join(args)
        name = process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    title = re.match(r"ray::(\S+)", command)
    if title:
        # while a method runs, Ray's title names it too (``...:Generator.handle_request``)
        return title.group(1).split(".")[0].removeprefix("ServeReplica:")
    for part in ("raylet", "gcs_server", "redis-server", "dashboard_agent", "runtime_env_agent",
                 "log_monitor", "monitor.py", "commands.cli"):
        if part in command or part in name:
            return ROLE_NAMES.get(part, part)
    script = next((arg for arg in args[1:] if arg.endswith(".py")), None)
    return f"{name} {script.rsplit('/', 1)[-1]}" if script else name


def memory_by_role(root_pids: list[int]) -> dict[str, dict[str, float]]:
    """``{role: {"rss_mib", "processes"}}`` of the processes under ``root_pids`` (themselves
    included); several processes of one role (Ray's idle workers) are summed."""
    seen: dict[int, psutil.Process] = {}
    for pid in root_pids:
        try:
            root = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        for process in [root, *root.children(recursive=True)]:
            seen[process.pid] = process
    totals: dict[str, list[float]] = {}
    for process in seen.values():
        try:
            rss = process.memory_info().rss / MIB
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        totals.setdefault(role(process), []).append(rss)
    return {name: {"rss_mib": round(sum(values), 1), "processes": len(values)}
            for name, values in sorted(totals.items())}


def find_pids(root_pids: list[int], wanted_role: str) -> list[int]:
    """The pids of the processes of one role under ``root_pids``."""
    found = []
    for pid in root_pids:
        try:
            tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        found += [p.pid for p in tree if role(p) == wanted_role]
    return found
