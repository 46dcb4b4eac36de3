"""torchrun entry point for tests/test_runs_survive.py: ``sadc`` with an optional failing rank.

``SADC_TEST_FAIL_RANK=R SADC_TEST_FAIL_STEP=S`` makes rank R raise a SadcError in its
S-th training step (1-based), as a rank whose data or device breaks mid-run would.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    rank, step = os.environ.get("SADC_TEST_FAIL_RANK"), int(os.environ.get("SADC_TEST_FAIL_STEP", "0"))
    if rank is not None and os.environ.get("RANK") == rank:
        import sadc.engine.run as run_mod
        from sadc.errors import SadcError

        inner = run_mod.SupervisedObjective
        calls = {"n": 0}

        def failing(model, forward):
            objective = inner(model, forward)

            def call(batch):
                calls["n"] += 1
                if calls["n"] == step:
                    raise SadcError(f"simulated failure on rank {rank} at step {step}")
                return objective(batch)

            return call

        run_mod.SupervisedObjective = failing
    from sadc.cli.main import app

    app(args=sys.argv[1:], prog_name="sadc")


if __name__ == "__main__":
    main()
