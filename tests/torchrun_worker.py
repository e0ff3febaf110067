"""Run by ``tests/test_distributed.py`` under ``torchrun --nproc-per-node 2``: several recon
commands in one launch (each launch costs seconds of imports), results written under TMP.

    torchrun --standalone --nproc-per-node 2 tests/torchrun_worker.py TMP
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from recon.cli.main import app
from recon.distributed import RankError, context, run_rows
from recon.errors import UserError


def main(tmp: Path) -> None:
    ctx = context()
    cfg = str(tmp / "run.yaml")
    app(
        [
            "evaluate",
            "-b",
            str(tmp / "bench"),
            "-o",
            str(tmp / "eval2"),
            "-c",
            cfg,
            "--samples",
            "2",
        ],
        standalone_mode=False,
    )
    app(
        [
            *("evaluate", "-b", str(tmp / "bench"), "-o", str(tmp / "eval-net2")),
            *("-c", str(tmp / "run-net.yaml"), "--samples", "2"),
        ],
        standalone_mode=False,
    )
    app(
        [
            *("acquire", str(tmp / "full.h5"), "-o", str(tmp / "ads2.h5"), "--steps", "8"),
            *("--particles", "2", "--center-fraction", "0.125", "--acceleration", "4"),
        ],
        standalone_mode=False,
    )

    def compute(chunk: list[tuple[int, ...]]) -> dict:
        if chunk == [(3,)]:
            raise UserError("item 3 is bad")
        return {k: {"v": k[0]} for k in chunk}

    try:
        run_rows([(i,) for i in range(6)], compute, batch_size=1, ctx=ctx)
        outcome = {"raised": False}
    except RankError as err:
        outcome = {"raised": True, "message": str(err), "user": err.user, "quiet": err.quiet}
    (tmp / f"error-rank{ctx.rank}.json").write_text(json.dumps(outcome))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
