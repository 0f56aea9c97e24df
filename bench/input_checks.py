"""What the up-front input checks and the redaction of log records cost.

    python bench/input_checks.py [--cues 2500]

Rows: reading a feature film's subtitle file (`--cues` cues) without and with the
bounds of `polydub.limits`, and emitting a log record without and with the redacting
record factory (a few secret-looking variables set). Ratios are against the baseline of
the same row, measured in the same process. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

from polydub import redact
from polydub.segments import Segment, check_cues, read_subtitles, to_srt

REPEATS = 20
RECORDS = 20_000


def best(fn, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cues", type=int, default=2500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "film.srt"
        cues = [Segment(i * 4.0, i * 4.0 + 3.0, f"Line number {i}, said at a normal pace.") for i in range(args.cues)]
        path.write_text(to_srt(cues))
        duration = args.cues * 4.0
        read = best(lambda: read_subtitles(path))
        checked = best(lambda: check_cues(path, read_subtitles(path), duration))
    print(f"{'row':44} {'seconds':>10} {'ratio':>7}")
    print(f"{f'read {args.cues} cues (baseline)':44} {read:10.4f} {1.0:7.2f}")
    print(f"{'read + check_cues':44} {checked:10.4f} {checked / read:7.2f}")

    os.environ.update(DEEPL_API_KEY="bench-deepl-key:fx", MICROSOFT_API_KEY="bench-microsoft-key")
    log = logging.getLogger("bench")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    log.setLevel(logging.INFO)
    message = "GET https://api.example.com/v2/translate?auth_key=%s&text=%s -> %d"

    def emit() -> None:
        for i in range(RECORDS):
            log.info(message, "bench-deepl-key:fx", "hello", i)

    plain = best(emit, 3)
    redact.install()
    masked = best(emit, 3)
    print(f"{f'{RECORDS} log records (baseline)':44} {plain:10.4f} {1.0:7.2f}")
    print(f"{f'{RECORDS} log records, redacted':44} {masked:10.4f} {masked / plain:7.2f}")
    print(f"{'per record, redaction':44} {(masked - plain) / RECORDS * 1e6:9.1f}us")


if __name__ == "__main__":
    main()
