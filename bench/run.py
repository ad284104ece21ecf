"""Benchmark: throughput and peak memory of whole runs through the real CLI.

Measures, each in a fresh subprocess (peak RSS is that process's own):

* file source -> stdout sink (jsonl into a file), N records, first run and an unchanged second run;
* ThreatQ emulator -> ctia sink -> CTIA emulator (both on 127.0.0.1 in this process), N indicators.

Memory should stay flat as N grows: the pull reads ahead at most two batches.

Usage::

    python bench/run.py                 # print the table
    python bench/run.py --write-readme  # also replace the table in README.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exportkit.config import write_config  # noqa: E402
from exportkit.records import Indicator  # noqa: E402

MEASURE = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter(); rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode\n"
    "print(rc, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def measure(folder: Path, *args: str) -> tuple[int, float, float]:
    """Run ``exportkit ARGS`` in ``folder``; returns (exit code, seconds, peak RSS in MiB)."""
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, sys.executable, "-m", "exportkit", *args], cwd=folder, capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), float(out[1]), int(out[2]) / 1024


def file_records(path: Path, count: int) -> None:
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(1, count + 1):
            record = Indicator.create(
                source="ThreatQ", source_id=i, value=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", type="ip",
                type_name="IP Address", status="Active", score=i % 10, tlp="amber", tags=["bench", "ip"],
                attributes=[("Confidence", "high")], sources=["Feed A"], description="benchmark record",
                updated_at=base + timedelta(seconds=i), link=f"https://tq.example/indicators/{i}/details",
            )
            fh.write(json.dumps(record.to_dict()) + "\n")


def bench_file(count: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        file_records(folder / "records.jsonl", count)
        write_config(folder / "b.toml", {
            "source": {"type": "file", "path": "records.jsonl"},
            "export": {"sinks": ["stdout"], "batch_size": 1000},
            "sinks": {"stdout": {"format": "jsonl", "path": "out.jsonl"}},
        })
        rows = []
        for label in ("first run", "second run (unchanged)"):
            code, seconds, rss = measure(folder, "run", "-n", "b", "-c", ".")
            assert code == 0, f"exit {code}"
            rows.append(f"| file -> stdout, {count:,} records, {label} | {seconds:.1f} s | {count / seconds:,.0f} | {rss:.0f} MiB |")
        return rows


def bench_ctia(count: int) -> list[str]:
    from exportkit.demo import demo_config
    from exportkit.threatq.emulator import ThreatQEmulator
    from exportkit_ctia.emulator import CtiaEmulator

    with tempfile.TemporaryDirectory() as tmp, ThreatQEmulator(indicators=count, seed=5) as tq, CtiaEmulator() as ctia:
        folder = Path(tmp)
        config = demo_config(tq, ctia, folder)
        config["export"] = {"sinks": ["ctia"], "batch_size": 1000}
        del config["sinks"]["stdout"]
        write_config(folder / "c.toml", config)
        rows = []
        for label in ("first run", "second run (unchanged)"):
            code, seconds, rss = measure(folder, "run", "-n", "c", "-c", ".")
            assert code in (0, 3), f"exit {code}"
            report = json.loads((folder / "c.report.json").read_text())
            rows.append(
                f"| ThreatQ -> CTIA, {count:,} indicators, {label}: {report['pulled']:,} pulled, "
                f"{report['sinks']['ctia']['accepted']:,} judgements created | {seconds:.1f} s | {report['pulled'] / seconds:,.0f} | {rss:.0f} MiB |"
            )
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--sizes", default="10000,50000", help="record counts for the file benchmark")
    parser.add_argument("--ctia-sizes", default="5000,20000", help="indicator counts for the ThreatQ -> CTIA benchmark")
    args = parser.parse_args()
    started = time.time()
    rows = ["| run | time | records/s | peak RSS |", "| --- | --- | --- | --- |"]
    for size in (int(s) for s in args.sizes.split(",")):
        rows += bench_file(size)
    for size in (int(s) for s in args.ctia_sizes.split(",")):
        rows += bench_ctia(size)
    cpu = f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    table = "\n".join(rows) + f"\n\n{cpu}; `python bench/run.py` on {datetime.now(timezone.utc):%Y-%m-%d}, {time.time() - started:.0f} s in all."
    print(table)
    if args.write_readme:
        readme = ROOT / "README.md"
        text = readme.read_text(encoding="utf-8")
        text = re.sub(r"(<!-- BEGIN BENCHMARK -->\n).*?(\n<!-- END BENCHMARK -->)", lambda m: m.group(1) + table + m.group(2), text, flags=re.S)
        readme.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
