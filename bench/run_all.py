"""Run every benchmark figure and print one table.

    .venv/bin/python -m bench.run_all            # the full run (several minutes)
    .venv/bin/python -m bench.run_all --quick    # a fast smoke run
    .venv/bin/python -m bench.run_all --only 1,3 # some figures

Each figure is a ratio against a floor measured in the same run on the same disk;
see each module's docstring for what exactly is timed.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from time import perf_counter

from bench import (
    activation,
    append,
    bench_supervisor,
    checkpoints,
    cluster,
    concurrent,
    history,
    http,
    memory,
    postgres,
    storage,
)
from bench.common import (
    Options,
    Result,
    describe_disk,
    describe_machine,
    print_table,
    say,
)

FIGURES: dict[str, Callable[[Options], list[Result]]] = {
    "1": append.run,
    "2": concurrent.run,
    "3": history.run,
    "4": activation.run,
    "5": checkpoints.run,
    "6": storage.run,
    "7": memory.run,
    "http": http.run,
    "lifecycle": bench_supervisor.run,
    "cluster": cluster.run,
    "pg": postgres.run,
}


def main(argv: list[str] | None = None) -> int:
    """Run the figures; exit 0 when every one ran (met or not), 1 if one failed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument(
        "--dir", dest="directory", help="scratch directory (a real disk)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch files")
    parser.add_argument("--rounds", type=int, help="rounds per measurement")
    parser.add_argument("--only", help="comma-separated figure numbers")
    args = parser.parse_args(argv)
    options = Options(
        quick=args.quick, directory=args.directory, keep=args.keep, rounds=args.rounds
    )
    chosen = args.only.split(",") if args.only else list(FIGURES)
    say(describe_machine())
    say(describe_disk(options))
    say(
        "mode: "
        + ("quick (smoke run; figures are indicative only)" if args.quick else "full")
    )
    results: list[Result] = []
    failed: list[str] = []
    started = perf_counter()
    for figure in chosen:
        say()
        start = perf_counter()
        try:
            results.extend(FIGURES[figure.strip()](options))
        except Exception:  # one broken figure must not hide the others
            traceback.print_exc()
            failed.append(figure)
        say(f"    (figure {figure} took {perf_counter() - start:.0f} s)")
    print_table(results)
    say(describe_machine())
    say(f"total time {perf_counter() - started:.0f} s")
    if failed:
        say(f"figures that failed to run: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
