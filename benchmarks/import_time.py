"""Start-up cost: ``import slimkern`` and ``slimkern --help`` against ``import torch``, as ratios timed in one run.

    python -m benchmarks.import_time                  # 7 interleaved rounds of fresh interpreters
    python -m benchmarks.import_time --rounds 15 --json import.json --markdown import.md

Each command runs in a fresh interpreter, in interleaved rounds (one of each per round) so that drift of a shared
machine's speed hits all alike; the table gives the median and minimum wall time and the ratio of the medians to
``import torch``. Target (issue 14): both ratios under 1.5 (the package adds well under half of torch's own start).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import subprocess
import sys
import time

from benchmarks.report import save

COMMANDS = {
    "import torch": "import torch",
    "import slimkern": "import slimkern",
    "slimkern --help": "import sys; sys.argv = ['slimkern', '--help']; from slimkern.cli import main; main()",
}
TARGET = 1.5


def wall_seconds(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(rounds: int) -> dict:
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for round_ in range(rounds + 1):
        for name, code in COMMANDS.items():
            seconds = wall_seconds(code)
            if round_:  # the first round warms the file-system cache
                times[name].append(seconds)
    base = statistics.median(times["import torch"])
    rows = [{"command": name, "median_s": statistics.median(values), "min_s": min(values),
             "ratio_to_torch": statistics.median(values) / base} for name, values in times.items()]
    return {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
            "date": datetime.date.today().isoformat(), "rounds": rounds, "rows": rows}


def markdown(result: dict) -> str:
    lines = [f"# Start-up time, {result['date']}, Python {result['python']}, {result['rounds']} interleaved rounds",
             "", "| command | median s | min s | median / import torch |", "| --- | --- | --- | --- |"]
    lines += [f"| `{r['command']}` | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['ratio_to_torch']:.2f} |"
              for r in result["rows"]]
    worst = max(r["ratio_to_torch"] for r in result["rows"])
    lines += ["", f"Target: under {TARGET}x `import torch` ({'met' if worst < TARGET else 'NOT met'}: {worst:.2f}x)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)
    result = measure(args.rounds)
    save(result, markdown(result), args.json, args.markdown)
    print(markdown(result))


if __name__ == "__main__":
    main()
