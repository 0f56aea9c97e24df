"""What object storage costs: the 60 s benchmark clip dubbed with the stage cache, input and
deliverables in an S3 bucket, against the same dub on local disk.

Dubs the looped example (bench/pipeline.py's clip, its approved transcript and translations
as sidecars; espeak-ng, lip-sync off: no network, no models) into `--langs` through the
real `dub` CLI, two ways, each run in a DUB_HOME of its own with its own local Prefect
server (as bench/pipeline.py starts it):

  local disk      the input a local file, `--out` a local folder, no DUB_STORAGE_URL; the
                  stage cache a folder both runs share (DUB_CACHE_DIR) - the baseline
  object storage  a real S3 API server on loopback (moto_server); the input and its sidecars
                  in s3://BUCKET/in/, `--out s3://BUCKET/out/runN/`, DUB_STORAGE_URL=s3://BUCKET/store

Per way, a cold run (empty cache) then a warm one (a second machine: another fresh
DUB_HOME, the same store and catalog, every stage expected cached). Shows each run's wall
seconds, its ratio to the local-disk run of the same kind, and for S3 the bytes that went
to and came from the server (counted by a TCP relay between `dub` and moto_server, HTTP
headers included), and the store's size after the cold run. Nothing is asserted.

    python bench/storage.py [--seconds 60] [--langs es,fr,de] [--keep]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import (  # noqa: E402 - the clip, the isolated CLI and its server
    NAME, SOURCE_LANG, add_clip_arguments, clip_langs, dub, dub_run, isolated_env, keep_or_remove, make_input,
    statuses, stop_server, timed)
from tests.services import Cuttable, s3_server  # noqa: E402 - moto_server and a TCP relay


BUCKET = "polydub-bench"
KEY_ID, SECRET = "bench", "benchsecret"
S3_ENV = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"}
RUNS = ("cold", "warm")
MB = 1e6


CountingRelay = Cuttable  # the tests' relay, which counts the bytes it passes each way


def bucket_fs(endpoint: str):
    """The bucket as this script sees it: directly, not through the relay (not counted)."""
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=endpoint, key=KEY_ID, secret=SECRET, use_listings_cache=False,
                             skip_instance_cache=True)


def folder_size(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def one_run(folder: Path, name: str, video: str, langs: list[str], out: str,
            shared: dict[str, str], drop: tuple[str, ...] = ()) -> tuple[float, dict]:
    """`dub VIDEO --langs .. --voice espeak --lipsync off --out OUT` as a machine of its own:
    a fresh DUB_HOME under `folder/name`, its own Prefect server (started before the clock,
    stopped after), `shared` (store, catalog, credentials) added and `drop` removed."""
    env = isolated_env(folder / name)
    for var in drop:
        env.pop(var, None)
    env.update(shared)
    try:
        timed(dub("server", "start"), env)
        return dub_run(video, langs, out, env, None, "--lipsync", "off")
    finally:
        stop_server(env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_clip_arguments(parser, "languages (of es, fr, de)")
    opts = parser.parse_args()
    langs = clip_langs(parser, opts)

    folder = Path(tempfile.mkdtemp(prefix="polydub-bench-"))
    load_before = os.getloadavg()[0]
    results: dict[tuple[str, str], tuple[float, dict, tuple[int, int, int] | None]] = {}
    try:
        video, _, duration = make_input(folder, opts.seconds)
        sidecars = [video.with_name(f"{NAME}.{lang}.srt") for lang in (SOURCE_LANG, *langs)]
        print(f"input: {duration:.2f} s ({video}); languages {','.join(langs)}; {os.cpu_count()} CPUs",
              file=sys.stderr)

        # 1. local disk: the baseline. Both machines share the cache folder and the catalog.
        local = folder / "local"
        shared = {"DUB_CACHE_DIR": str(local / "store" / "cache"),
                  "DUB_DATABASE_URL": f"sqlite:///{local / 'catalog.db'}"}
        local_store = (0, 0)
        for i, run in enumerate(RUNS, 1):
            print(f"local disk, {run} ...", file=sys.stderr)
            seconds, report = one_run(local, f"machine{i}", str(video), langs, str(local / "out" / f"run{i}"),
                                      shared, drop=("DUB_OUTPUTS_DIR",))
            results["local disk", run] = (seconds, report, None)
            if run == "cold":
                local_store = folder_size(local / "store")

        # 2. object storage: moto_server behind a counting relay; both machines share the
        # bucket and the catalog, and nothing else.
        with s3_server() as endpoint:
            relay = CountingRelay(int(endpoint.rsplit(":", 1)[1]))
            try:
                fs = bucket_fs(endpoint)
                fs.mkdir(BUCKET)
                for path in (video, *sidecars):
                    fs.put_file(str(path), f"{BUCKET}/in/{path.name}")
                remote = folder / "s3"
                remote.mkdir()
                shared = {**S3_ENV, "AWS_ENDPOINT_URL": relay.url, "DUB_STORAGE_URL": f"s3://{BUCKET}/store",
                          "DUB_DATABASE_URL": f"sqlite:///{remote / 'catalog.db'}"}
                for i, run in enumerate(RUNS, 1):
                    print(f"object storage, {run} ...", file=sys.stderr)
                    relay.reset()
                    seconds, report = one_run(remote, f"machine{i}", f"s3://{BUCKET}/in/{video.name}", langs,
                                              f"s3://{BUCKET}/out/run{i}/", shared,
                                              drop=("DUB_CACHE_DIR", "DUB_OUTPUTS_DIR"))
                    results["object storage", run] = (seconds, report,
                                                      (relay.sent, relay.received, relay.connections))
                    if run == "cold":
                        sizes = [info["size"] for info in fs.find(f"{BUCKET}/store", detail=True).values()]
                        remote_store = (len(sizes), sum(sizes))
            finally:
                relay.close()

        title = (f"object storage vs local disk: {duration:.1f} s clip into {','.join(langs)}, espeak-ng, "
                 f"--lipsync off, {os.cpu_count()} CPUs, load average {load_before:.1f} before, "
                 f"{os.getloadavg()[0]:.1f} after")
        print(title)
        print()
        print("| mode | run | dub wall s | / local disk | MB up | MB down | connections | stage runs |")
        print("|---|---|---:|---:|---:|---:|---:|---|")
        for (mode, run), (seconds, report, moved) in results.items():
            base = results["local disk", run][0]
            up, down, conns = ("", "", "") if moved is None else \
                (f"{moved[0] / MB:.2f}", f"{moved[1] / MB:.2f}", str(moved[2]))
            print(f"| {mode} | {run} | {seconds:.2f} | {seconds / base:.2f} | {up} | {down} | {conns} "
                  f"| {statuses(report)} |")
        print()
        print(f"store after the cold run: s3://{BUCKET}/store, {remote_store[1] / MB:.2f} MB in "
              f"{remote_store[0]} objects (local disk: the cache folder, {local_store[1] / MB:.2f} MB in "
              f"{local_store[0]} files). MB up / down: bytes dub sent to / got from the S3 server "
              f"through the relay, HTTP included; 1 MB = 10^6 bytes.")
    finally:
        keep_or_remove(folder, opts.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
