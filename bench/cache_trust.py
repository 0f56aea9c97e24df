"""What checking the cache costs: sizes and sha256 digests of every reused file, and copies
(not links) for deliverables, on the 60 s benchmark clip.

Dubs the looped example cold through the real `dub` CLI (isolated server, catalog and
cache, as bench/pipeline.py does), re-runs it warm (every stage reused, so every entry is
checked), then times in this process the checks a warm run makes and the copies it
delivers, each against its cheaper alternative. Nothing is asserted.

    python bench/cache_trust.py [--seconds 60] [--langs es,fr,de]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pipeline import dub, dub_run, isolated_env, make_input, stop_server, timed

from polydub import cache

REPEAT = 3  # in-process timings: best of


def best(fn, repeat: int = REPEAT) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def entries(root: Path) -> list[Path]:
    return [folder for stage in root.iterdir() if stage.is_dir() and stage.name not in cache.NOT_STAGES
            for folder in stage.iterdir() if folder.is_dir() and not folder.name.startswith(".")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--langs", default="es,fr,de")
    opts = parser.parse_args()
    langs = opts.langs.split(",")
    folder = Path(tempfile.mkdtemp(prefix="polydub-bench-"))
    env = isolated_env(folder)
    try:
        video, _, duration = make_input(folder, opts.seconds)
        timed(dub("server", "start"), env)
        out = folder / "out"
        cold_s, _ = dub_run(video, langs, out, env)
        warm_s, _ = dub_run(video, langs, out, env)
        root = Path(env["DUB_CACHE_DIR"])
        found = entries(root)
        files = [p for f in found for p in f.iterdir() if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        digests_s = best(lambda: [cache.damage(f, digests=True) for f in found])
        sizes_s = best(lambda: [cache.damage(f, digests=False) for f in found])
        delivered = [p for p in out.iterdir() if p.is_file() and not p.name.endswith(".json")]
        scratch = folder / "copies"
        scratch.mkdir()

        def copy_all() -> None:
            for p in delivered:
                cache.place(p, scratch / p.name)

        def link_all() -> None:
            for p in delivered:
                (scratch / p.name).unlink(missing_ok=True)
                os.link(p, scratch / p.name)

        copy_s, link_s = best(copy_all), best(link_all)
        out_size = sum(p.stat().st_size for p in delivered)
        rows = [
            ("cold run", f"{cold_s:.2f}", ""),
            ("warm re-run (every entry checked)", f"{warm_s:.2f}", ""),
            (f"sizes + sha256 of {len(found)} entries, {len(files)} files, {size / 1e6:.1f} MB",
             f"{digests_s:.3f}", f"{digests_s / warm_s:.1%} of the warm run"),
            ("sizes only (the baseline)", f"{sizes_s:.3f}", ""),
            (f"copy {len(delivered)} deliverables, {out_size / 1e6:.1f} MB", f"{copy_s:.3f}",
             f"{copy_s / warm_s:.1%} of the warm run"),
            ("hard-link them (what was done before)", f"{link_s:.3f}", ""),
        ]
        print(f"cache checks: {duration:.0f} s clip into {','.join(langs)}, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")
        print("| what | seconds | share |\n|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    finally:
        stop_server(env)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
