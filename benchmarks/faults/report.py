"""The tables `tailor check-faults` prints: loads, memory per process, and each promise."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_report(results: dict, console: Console) -> None:
    console.print(_loads(results))
    memory = _memory(results)
    if memory is not None:
        console.print(memory)
    console.print(_promises(results))


def _loads(results: dict) -> Table:
    table = Table(title="Load (loopback; latency of the 2xx answers)")
    for column in ("part", "clients", "s", "requests", "2xx", "req/s", "p50 s", "p95 s", "p99 s",
                   "failures (status code)"):
        table.add_column(column, justify="left" if column.startswith(("part", "fail")) else "right")
    rows = [(name, part["load"]) for name, part in results.items() if "load" in part]
    if "burst" in results:
        rows += [("burst: unloaded", results["burst"]["unloaded"]),
                 ("burst: at once", results["burst"]["burst"])]
    for name, load in rows:
        failures = ", ".join(f"{n}× {what}" for what, n in load["failures"].items()) or "-"
        table.add_row(name, str(load["clients"]), f"{load['seconds']:g}", str(load["requests"]),
                      str(load["succeeded"]), f"{load['throughput_rps']:g}", _s(load["p50_s"]),
                      _s(load["p95_s"]), _s(load["p99_s"]), failures)
    return table


def _memory(results: dict) -> Table | None:
    loads = [(name, part) for name, part in results.items() if "memory_start_mib" in part]
    if not loads:
        return None
    table = Table(title="Resident memory (MiB) at the start and end of each sustained load")
    table.add_column("process")
    for name, _ in loads:
        table.add_column(f"{name} start", justify="right")
        table.add_column(f"{name} end", justify="right")
    roles = sorted({role for _, part in loads for key in ("memory_start_mib", "memory_end_mib")
                    for role in part[key]})
    for role in roles:
        cells = []
        for _, part in loads:
            for key in ("memory_start_mib", "memory_end_mib"):
                entry = part[key].get(role)
                cells.append("-" if entry is None else
                             f"{entry['rss_mib']:.0f}" + (f" ({entry['processes']}p)"
                                                          if entry["processes"] > 1 else ""))
        table.add_row(role, *cells)
    totals = []
    for _, part in loads:
        for key in ("memory_start_mib", "memory_end_mib"):
            totals.append(f"{sum(e['rss_mib'] for e in part[key].values()):.0f}")
    table.add_row("[bold]all[/]", *totals)
    return table


def _promises(results: dict) -> Table:
    table = Table(title="What each part promises")
    table.add_column("part")
    table.add_column("figure")
    table.add_column("ok", justify="center")
    for name, part in results.items():
        table.add_row(name, _figure(name, part), "[green]yes[/]" if part["ok"] else "[red]NO[/]")
    return table


def _figure(name: str, part: dict) -> str:
    if name.startswith("load_"):
        load = part["load"]
        return f"{load['succeeded']}/{load['requests']} answered 200"
    if name == "burst":
        return (f"{part['refused_429']} refused with 429; admitted p95 "
                f"{part['admitted_p95_over_unloaded_p95']}× unloaded p95")
    if name == "generator_killed":
        return (f"killed pid {part['killed_pid']}; failures {part['load']['failures'] or 'none'}; "
                f"replica back: {part['replica_back']}")
    if name == "redis_killed":
        return (f"acknowledged {part['acknowledged']}, of them stored after restart "
                f"{part['acknowledged_and_stored']} (lost {part['lost']}; stored though "
                f"refused {part['stored_not_acknowledged']}); "
                f"failures {part['load']['failures'] or 'none'}")
    if name == "shutdown":
        return f"SIGTERM: `tailor up` exited with {part['exit_status']}"
    if name == "fuzz":
        return (f"{part['cases']} cases, {part['requests']} requests, "
                f"{part['server_errors']} answered 5xx; statuses {part['statuses']}")
    return ""


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
