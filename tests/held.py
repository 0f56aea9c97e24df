"""A real `dub` process stopped at a chosen stage: DUB_TEST_HOLD=STAGE:FILE (see
polydub/tasks/common.py) makes each run of STAGE, its files built but not yet published,
write FILE and wait until FILE is removed. Kill, interrupt or starve the process there,
or remove FILE to let it go on (runs of STAGE that come later then pass, so a slower
language never holds again where no test is watching)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HOLD_TIMEOUT_S = 300  # a whole job's stages before the held one, on a busy machine


def start_held(args: list[str], stage: str, flag: Path, env: dict | None = None, **popen) -> subprocess.Popen:
    """Start `dub ARGS` in its own process group (as a terminal runs it), with `env` added to
    the environment (None removes a variable); return once it holds at `stage` (FILE `flag`
    written)."""
    popen = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **popen}
    environ = {**os.environ, **(env or {}), "DUB_TEST_HOLD": f"{stage}:{flag}"}
    proc = subprocess.Popen([sys.executable, "-m", "polydub.cli", *args], start_new_session=True,
                            env={k: v for k, v in environ.items() if v is not None}, **popen)
    deadline = time.monotonic() + HOLD_TIMEOUT_S
    while not flag.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate(timeout=60)
            raise AssertionError(f"the job ended or stalled before {stage} (exit {proc.returncode}): "
                                 f"{(err or '')[-2000:]}")
        time.sleep(0.05)
    return proc
