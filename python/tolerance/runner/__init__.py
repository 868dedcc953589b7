"""runner layer: run a stem on this box: chips, isolated run dirs, timeouts, statuses,
the newest output of each chip, and an environment fingerprint. No MPI here."""
from __future__ import annotations

from tolerance.runner.box import (STATUSES, BoxResult, ChipResult, chip_env, newest_output,
                                  run_on_box)
from tolerance.runner.env_fingerprint import environment_fingerprint, publishable_fingerprint
from tolerance.runner.rundir import claim_run_dir, open_run_dir, utc_stamp

__all__ = ["STATUSES", "BoxResult", "ChipResult", "chip_env", "claim_run_dir",
           "environment_fingerprint", "newest_output", "publishable_fingerprint", "open_run_dir", "run_on_box", "utc_stamp"]
