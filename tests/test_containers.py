"""The container set-up (Dockerfile, deploy/prefect.containers.yaml, deploy/k8s-job-template.json),
checked the way Prefect's Docker and Kubernetes workers read it: each deployment's job
variables go through the real worker's job configuration, which renders the container or
Kubernetes Job a run would get. Images are not built here."""

from __future__ import annotations

import asyncio
import inspect
import json
import re

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # Prefect and the Kubernetes client imported
CONTAINERS = REPO / "deploy" / "prefect.containers.yaml"
TEMPLATE = REPO / "deploy" / "k8s-job-template.json"


def deployments() -> dict[str, dict]:
    return {d["name"]: d for d in yaml.safe_load(CONTAINERS.read_text())["deployments"]}


def kubernetes_job(variables: dict) -> dict:
    """The Kubernetes Job the worker of `polydub-k8s` would create with these job variables."""
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    template = json.loads(TEMPLATE.read_text())
    config = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(template, variables))
    config._populate_env_in_manifest()  # as the worker does before it submits the Job
    return config.job_manifest


def test_the_flows_run_where_the_image_installs_polydub():
    spec = yaml.safe_load(CONTAINERS.read_text())
    (step,) = spec["pull"]
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == "/opt/polydub"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "WORKDIR /opt/polydub" in dockerfile
    assert {"cpu", "gpu"} <= set(re.findall(r"^FROM \S+ AS (\w+)$", dockerfile, re.M))
    # the image installs the system packages ./dev installs to run polydub
    dev = (REPO / "dev").read_text()
    needed = set(re.findall(r"for cmd in ([^;]+);", dev)[0].split()) - {"ffmpeg:ffmpeg", "ffprobe:ffmpeg"}
    apt = re.search(r"apt-get install[^\n]*--no-install-recommends ([^\\\n]+)", dockerfile)[1].split()
    assert {c.split(":")[1] for c in needed} | {"ffmpeg", "libsndfile1"} <= set(apt), apt
    assert "chatterbox-tts==0.1.7" in dockerfile and "-c constraints.txt ." in dockerfile


def test_every_container_deployment_runs_a_flow_with_parameters_it_takes():
    from polydub.options import DubOptions

    for name, deployment in deployments().items():
        module, _, flow = deployment["entrypoint"].rpartition(".")
        function = getattr(__import__(module, fromlist=[flow]), flow)
        assert set(deployment.get("parameters", {})) <= set(inspect.signature(function.fn).parameters), name
        if "options" in deployment.get("parameters", {}):
            DubOptions(**deployment["parameters"]["options"])  # a bad option would fail every run


def test_the_gpu_job_asks_kubernetes_for_one_gpu_and_reads_its_secrets_from_a_secret():
    jobs = {name: kubernetes_job(d["work_pool"]["job_variables"]) for name, d in deployments().items()
            if d["work_pool"]["name"] == "polydub-k8s"}
    assert set(jobs) == {"dub-video-k8s", "dub-video-gpu-k8s", "lipsync-gpu-k8s"}
    for name, job in jobs.items():
        (container,) = job["spec"]["template"]["spec"]["containers"]
        gpus = container["resources"]["limits"]["nvidia.com/gpu"]
        assert gpus == (1 if "gpu" in name else 0), (name, gpus)
        assert container["image"] == ("polydub:gpu" if "gpu" in name else "polydub:cpu")
        assert job["metadata"]["namespace"] == "polydub"
        env = {e["name"]: e for e in container["env"]}
        for secret in ("DUB_DATABASE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[secret]["valueFrom"]["secretKeyRef"]["name"] == "polydub" and "value" not in env[secret]
        assert env["DUB_MODELS_DIR"]["value"] == "/models"
        (mount,) = container["volumeMounts"]
        (volume,) = job["spec"]["template"]["spec"]["volumes"]
        assert mount["mountPath"] == "/models" and mount["readOnly"] and volume["name"] == mount["name"]
        assert volume["persistentVolumeClaim"]["claimName"] == "polydub-models"


def test_the_docker_job_mounts_weights_and_outputs_and_holds_no_secret():
    from prefect_docker.worker import DockerWorker, DockerWorkerJobConfiguration

    deployment = deployments()["dub-video-docker"]
    variables = deployment["work_pool"]["job_variables"]
    config = asyncio.run(DockerWorkerJobConfiguration.from_template_and_values(
        DockerWorker.get_default_base_job_template(), variables))
    assert config.image == "polydub:cpu"
    mounts = {v.split(":")[1]: v for v in config.volumes}
    assert mounts["/models"].endswith(":ro") and "/var/lib/polydub/outputs" in mounts
    assert config.env["DUB_MODELS_DIR"] == "/models"


@pytest.mark.parametrize("path", [CONTAINERS, TEMPLATE, REPO / "Dockerfile"])
def test_no_secret_is_written_into_the_set_up(path):
    text = path.read_text()
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "DUB_DATABASE_URL", "PREFECT_API_AUTH_STRING"):
        assert not re.search(rf"{name}\s*[:=]\s*\S", text), (path.name, name)  # a literal value
    assert "postgresql://" not in text and "@" not in text.replace("valueFrom", "")
