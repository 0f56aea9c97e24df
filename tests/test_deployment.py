"""prefect.yaml: every deployment points at an importable flow, its parameters are ones the
flow takes, and the flow's parameters render as a typed form in the Prefect UI."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from prefect.utilities.callables import parameter_schema

from tests.conftest import REPO


def load_flow(entrypoint: str):
    path, name = entrypoint.split(":")
    module = importlib.import_module(Path(path).with_suffix("").as_posix().replace("/", "."))
    return getattr(module, name)


def test_deployments_match_the_flow():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert {d["name"] for d in spec["deployments"]} >= {"dub-video", "dub-video-gpu"}
    for deployment in spec["deployments"]:
        flow = load_flow(deployment["entrypoint"])
        schema = parameter_schema(flow.fn).model_dump_for_openapi()
        props = schema["properties"]
        assert set(deployment.get("parameters", {})) <= set(props), deployment["name"]
        assert deployment["work_pool"]["name"] in ("polydub-cpu", "polydub-gpu")
    schema = parameter_schema(load_flow(spec["deployments"][0]["entrypoint"]).fn).model_dump_for_openapi()
    props = schema["properties"]
    assert schema["required"] == ["input", "langs"]  # the form asks for these two
    assert props["langs"]["type"] == "array" and props["langs"]["items"]["type"] == "string"
    assert props["max_speed"]["type"] == "number" and props["max_speed"]["default"] == 1.3
    assert props["lipsync"]["default"] == "auto"
    assert "auto | on | off" in props["lipsync"]["description"]  # help text shown in the form
    assert "ISO 639-1" in props["langs"]["description"]


def test_dub_worker_serves_a_pool(prefect_api, tmp_path):
    """`dub worker` starts a Prefect worker against the configured server; its pool appears."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from prefect.client.orchestration import get_client

    proc = subprocess.Popen([sys.executable, "-m", "polydub.cli", "worker", "--pool", "polydub-test-pool"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, pools = time.monotonic() + 90, []
        while time.monotonic() < deadline and "polydub-test-pool" not in pools:
            time.sleep(1)
            with get_client(sync_client=True) as client:
                pools = [p.name for p in client.read_work_pools()]
            assert proc.poll() is None, "the worker exited"
        assert "polydub-test-pool" in pools
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
