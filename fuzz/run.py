"""Coverage-guided fuzzing of both receive paths with atheris (libFuzzer), in process.

    .venv/bin/python fuzz/run.py radius --runs 1000000          # make fuzz runs both
    .venv/bin/python fuzz/run.py diameter --seconds 12           # the short run in make test

Starts from the committed seed corpus (``fuzz/corpus/<target>/``: radclient's packets,
Kamailio-style accounting, Diameter Gy CCR-I/U/T/E, CER, DWR); what the fuzzer finds new goes
to a scratch corpus (``--work``, default a temporary directory), never into the committed one.
A crash writes its input to ``fuzz/crashes/<target>-crash-*`` and exits non-zero; turn it into
a regression (``fuzz/regressions/<target>/``, replayed by tests/unit/test_fuzz_regressions.py).
Prints inputs run, exec/s, coverage (libFuzzer's edge count ``cov`` and feature count
``ft`` over the instrumented ``ocs`` package) and crashes.

The package runs from its Python source here (``OCS_NATIVE=0``): atheris instruments Python
bytecode, and the compiled hot paths (``scripts/build_native.py``) have none. The same inputs
replay through the compiled modules in tests/unit/test_fuzz_regressions.py.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = ("radius", "diameter")


def child(target: str, libfuzzer_args: list[str]) -> None:
    import logging  # noqa: PLC0415

    import atheris  # noqa: PLC0415

    # Refusals and drops are logged at warning level and below; millions of them would only
    # slow the fuzzer. Errors (a path's catch-all) still show, and count as crashes anyway.
    logging.disable(logging.WARNING)

    # First, so that its finder of Python sources (OCS_NATIVE=0) runs behind atheris's hook.
    importlib.import_module("ocs")

    with atheris.instrument_imports(include=["ocs"]):
        sys.path.insert(0, str(HERE))
        import harness  # noqa: PLC0415

    runner = harness.TARGETS[target]()

    def one_input(data: bytes) -> None:
        runner.one(data)

    atheris.Setup([sys.argv[0], *libfuzzer_args], one_input)
    atheris.Fuzz()


_FINAL = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+)")
_STATUS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+).*?exec/s: (\d+)")
_STAT = re.compile(r"stat::(\w+):\s+(\d+)")


def run(target: str, *, runs: int | None, seconds: int | None, work: Path, jobs_log: Path) -> dict:
    seeds = HERE / "corpus" / target
    crashes = HERE / "crashes"
    crashes.mkdir(exist_ok=True)
    args = [
        str(work),
        str(seeds),
        f"-artifact_prefix={crashes}/{target}-",
        "-print_final_stats=1",
        "-max_len=4096",
        "-timeout=10",
        "-rss_limit_mb=2048",
    ]
    if runs is not None:
        args.append(f"-runs={runs}")
    if seconds is not None:
        args.append(f"-max_total_time={seconds}")
    started = time.monotonic()
    with jobs_log.open("w") as log:
        done = subprocess.run(
            [sys.executable, __file__, "--child", target, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    elapsed = time.monotonic() - started
    text = jobs_log.read_text(errors="replace")
    final = _FINAL.findall(text)
    status = _STATUS.findall(text)
    stats = dict(_STAT.findall(text))
    runs_done = int(stats.get("number_of_executed_units", final[-1][0] if final else 0))
    cov, ft = (final[-1][1], final[-1][2]) if final else (status[-1][1], status[-1][2])
    crashed = sorted(p.name for p in crashes.glob(f"{target}-*"))
    return {
        "target": target,
        "inputs": runs_done,
        "seconds": round(elapsed, 1),
        "exec_per_s": int(stats.get("average_exec_per_sec", 0)) or round(runs_done / elapsed),
        "coverage_edges": int(cov),
        "features": int(ft),
        "corpus_inputs": len(list(work.iterdir())),
        "peak_rss_mb": int(stats.get("peak_rss_mb", 0)),
        "exit_code": done.returncode,
        "crash_files": crashed,
        "log": str(jobs_log),
    }


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("targets", nargs="+", choices=TARGETS)
    p.add_argument("--runs", type=int, help="inputs per target")
    p.add_argument("--seconds", type=int, help="time per target")
    p.add_argument("--work", type=Path, help="scratch corpus directory (default: temporary)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.runs is None and args.seconds is None:
        p.error("give --runs or --seconds (every run is bounded)")
    failed = False
    with tempfile.TemporaryDirectory(prefix="ocs-fuzz-") as scratch:
        for target in args.targets:
            work = (args.work or Path(scratch)) / target
            work.mkdir(parents=True, exist_ok=True)
            log = Path(scratch if args.work is None else args.work) / f"{target}.log"
            result = run(target, runs=args.runs, seconds=args.seconds, work=work, jobs_log=log)
            if result["exit_code"] != 0:
                failed = True
                tail = log.read_text(errors="replace").splitlines()[-40:]
                print("\n".join(tail), file=sys.stderr)
            if args.json:
                print(json.dumps(result))
            else:
                print(
                    f"{target}: {result['inputs']:,} inputs in {result['seconds']} s, "
                    f"{result['exec_per_s']:,} exec/s, coverage {result['coverage_edges']} "
                    f"edges / {result['features']} features, corpus {result['corpus_inputs']}, "
                    f"peak RSS {result['peak_rss_mb']} MB, crashes {len(result['crash_files'])}"
                    f" (exit {result['exit_code']})"
                )
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    os.environ["OCS_NATIVE"] = "0"  # read by ``ocs`` when the child imports it
    sys.exit(main())
