"""Whether two finished run folders hold the same result: the same config run two ways (e.g.
`executor.kind: local` and `ray`), or on two machines. What the chaos harness checks after its
kills (`chaos.differences`): the selections, stage-2 answers and scores, evaluation answers, the
report's hypervolumes, collapse rates and per-model means, and the adapters (allclose). Tasks on
other nodes or with other thread counts sum in another order, so adapters are equal up to float
rounding: `--atol` (default 1e-4) is the absolute tolerance on their weights.

    python -m benchmarks.same_result runs/demo runs/demo-ray   (from the repository root)

Prints what differs, then `same result` (exit 0) or `NOT the same result` (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import chaos


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance on adapter weights")
    args = ap.parse_args()
    for root in (args.a, args.b):
        if not (root / "report.json").is_file():
            print(f"{root}: not a finished run folder (no report.json); give two folders that `paretohqd run` finished")
            return 2
    differ = chaos.differences(args.a, args.b, atol=args.atol)
    for what in differ:
        print(f"differs: {what}")
    print("NOT the same result" if differ else f"same result ({args.a} and {args.b})")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
