"""prefect.yaml: every deployment points at the importable flow and its parameters are ones
the flow's form accepts."""

from __future__ import annotations

import importlib
import inspect

import yaml

from polydub.options import DubOptions
from tests.conftest import REPO


def load_flow(entrypoint: str):
    module, name = entrypoint.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def test_deployments_match_the_flow():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert {d["name"] for d in spec["deployments"]} >= {"dub-video", "dub-video-gpu", "lipsync-gpu"}
    assert "pull" not in spec  # Prefect's default pull step: the folder `prefect deploy` ran in
    for deployment in spec["deployments"]:
        flow = load_flow(deployment["entrypoint"])
        assert flow.name in ("dub-video", "dub-catalog", "lipsync")
        params = deployment.get("parameters", {})
        assert set(params) <= set(inspect.signature(flow.fn).parameters), deployment["name"]
        DubOptions(**params.get("options", {}))  # valid options, by the same model as the CLI
        assert deployment["work_pool"]["name"] in ("polydub-cpu", "polydub-gpu")
    gpu = next(d for d in spec["deployments"] if d["name"] == "dub-video-gpu")
    assert gpu["parameters"]["options"]["lipsync"] == "on"
    # the hand-off's target: on the GPU pool, named as DUB_LIPSYNC_DEPLOYMENT names it in the README
    handoff = next(d for d in spec["deployments"] if d["name"] == "lipsync-gpu")
    assert handoff["work_pool"]["name"] == "polydub-gpu"
    assert "DUB_LIPSYNC_DEPLOYMENT=lipsync/lipsync-gpu" in (REPO / "README.md").read_text()
    nightly = next(d for d in spec["deployments"] if d.get("schedules"))
    assert nightly["schedules"][0]["active"] is False  # switched on from the UI when wanted
    assert load_flow(nightly["entrypoint"]).name == "dub-catalog"  # new or stale items only
    assert (REPO / nightly["parameters"]["manifest"]).is_file()
