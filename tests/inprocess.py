"""`dub` run inside the test process: the same `polydub.cli.main` that the console script
calls, with its stdout and stderr captured and its exit status returned, for tests in
which the process itself is not what is tested (reading the catalog, whole dubs whose
outputs are checked). It saves a Python start and Prefect's imports per call.

Tests of exit on signals, tracebacks on the console, refusal before Prefect is imported or
a lost server keep running the real command in a subprocess.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
from pathlib import Path


def dub(*args: str | Path, env: dict[str, str | None] | None = None, cwd: str | Path | None = None
        ) -> subprocess.CompletedProcess:
    """`dub ARGS` with `env` added to the environment (None removes a variable) and the
    working folder `cwd`, all put back afterwards; a CompletedProcess as subprocess.run
    gives it (`returncode` is what `dub` exits with)."""
    from polydub import cli
    from polydub.batch import staleness

    saved_env, saved_cwd, saved_sigint = dict(os.environ), os.getcwd(), signal.getsignal(signal.SIGINT)
    saved_umask = os.umask(0o022)
    os.umask(saved_umask)
    for name, value in (env or {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = str(value)
    for cached in vars(staleness).values():  # model identities read from the environment, once per process
        if callable(getattr(cached, "cache_clear", None)):
            cached.cache_clear()
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            rc = cli.main([str(a) for a in args])
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        signal.signal(signal.SIGINT, saved_sigint)
        os.umask(saved_umask)
    return subprocess.CompletedProcess(["dub", *map(str, args)], rc, stdout.getvalue(), stderr.getvalue())


def refused(*args: str | Path, out: Path, env: dict[str, str | None] | None = None) -> str:
    """The one line `dub ARGS --out OUT` is refused with, before any work: exit 2, no
    traceback, nothing made in `out`."""
    result = dub(*args, "--out", out, env=env)
    line = result.stderr.strip()
    assert result.returncode == 2 and "\n" not in line and "Traceback" not in line, result.stderr
    assert not Path(out).exists(), f"{out} was made"
    return line
