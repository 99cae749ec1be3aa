"""medianode benchmarks: each subcommand times medianode beside the best tools, in the same run.

    scripts/bench burn    [--runs N] [--warmup N] [--quick] [--only ct|set|dvd] [--data DIR] [--json]
                          [--dvd] [--dvd-runs N]
    scripts/bench receive [--runs N] [--warmup N] [--quick] [--data DIR] [--json]
    scripts/bench import  [--runs N] [--warmup N] [--quick] [--data DIR] [--json]
    scripts/bench compress [--runs N] [--warmup N] [--quick] [--only ct|cr] [--syntax NAME]... [--settings] [--data DIR]
                           [--json]
    scripts/bench soak    [--cycles N] [--instances N] [--data DIR] [--json]
    scripts/bench console [--runs N] [--warmup N] [--quick] [--requests N] [--data DIR] [--json]
    scripts/bench stations [--runs N] [--warmup N] [--quick] [--data DIR] [--json]

Generated data is cached under --data (default: bench-data/ at the repository root, git-ignored);
outputs are written under DIR/out and removed afterwards. Progress goes to stderr; the tables go
to stdout, or to stderr with --json so that stdout holds only the JSON document. The figures these
are put beside: ../shared/BENCHMARKS.md. The code: scripts/benchkit/, one module per subcommand.
"""
from __future__ import annotations

import sys

from benchkit import burn, compress, console, importing, receive, soak, stations  # noqa: F401  (each registers its subcommand)
from benchkit.common import main

if __name__ == "__main__":
    sys.exit(main(doc=__doc__))
