"""The README's overhead tables, made from the benchmarks' JSON (bench/results/).

    python bench/tables.py            print them
    python bench/tables.py --readme   write them into README.md, between their markers

Each table is one results file: rows are networks, columns the cases by activation, cells
the median per-pair ratio; a cell over its target is marked with an asterisk.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
README = Path(__file__).parent.parent / "README.md"
TABLES = {  # marker name: results file
    "overhead": "overhead.json",
    "overhead-tensor-ops": "overhead-tensor-ops.json",
    "service": "service.json",
}


def overhead_table(report: dict[str, Any]) -> str:
    rows: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    columns: list[tuple[str, str]] = []
    for r in report["results"]:
        key = (r["activation"], r["case"])
        if key not in columns:
            columns.append(key)
        rows.setdefault(r["network"], {})[key] = r
    head = "| depth/width/batch | " + " | ".join(f"{a}, {c}" for a, c in columns) + " |"
    lines = [head, "|---" * (len(columns) + 1) + "|"]
    for network, cells in rows.items():
        shown = []
        for key in columns:
            r = cells.get(key)
            shown.append(
                "" if r is None else f"{r['ratio_median']:.2f}×{'' if r['meets_target'] else '*'}"
            )
        lines.append(f"| {network} | " + " | ".join(shown) + " |")
    pairs = {r["pairs"] for r in report["results"]}
    by_case = {r["case"]: r["target"] for r in report["results"]}  # the tensor ops' aim too
    targets = ", ".join(f"{case} ≤ {t}×" for case, t in by_case.items())
    backend = {r["probe_backend"] for r in report["results"]}
    lines.append("")
    lines.append(
        f"({', '.join(sorted(backend))}; {'/'.join(map(str, sorted(pairs)))} pairs a cell; "
        f"targets {targets}; * over its target; machine load at start "
        f"{report['machine']['load_average_at_start'][0]:.1f})"
    )
    return "\n".join(lines)


def service_table(report: dict[str, Any]) -> str:
    lines = [
        "| depth/width/batch | steps | train() | POST /api/runs to the stream's end | ratio "
        "| fastest / fastest |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        fastest = r.get("fastest_over_fastest")
        lines.append(
            f"| {r['network']} | {r['steps']} | {r['train_s_median']:.2f} s | "
            f"{r['service_s_median']:.2f} s | {r['ratio_median']:.2f}×"
            f"{'' if r['meets_target'] else '*'} | "
            f"{'' if fastest is None else f'{fastest:.2f}×'} |"
        )
    return "\n".join(lines)


def table(name: str) -> str | None:
    path = RESULTS / TABLES[name]
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    if "baseline" not in report and name != "service":
        return None  # the previous benchmark's format: left as the README has it
    return service_table(report) if name == "service" else overhead_table(report)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--readme", action="store_true", help="write them into README.md")
    args = parser.parse_args()
    text = README.read_text()
    for name in TABLES:
        made = table(name)
        if made is None:
            continue
        if not args.readme:
            print(f"{name}:\n{made}\n")
            continue
        start, end = f"<!-- table {name}: bench/tables.py -->", f"<!-- end table {name} -->"
        pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no markers for the {name} table")
        replacement = f"{start}\n{made}\n{end}"
        text = pattern.sub(lambda _match, new=replacement: new, text)
    if args.readme:
        README.write_text(text)


if __name__ == "__main__":
    main()
