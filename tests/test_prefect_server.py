"""The README's "Running from the Prefect UI", done for real: a Prefect server process on a
free port, both work pools, `prefect deploy --all` from the project root, `dub worker`
configured only through a Prefect profile, and runs created through the API as the UI's
form creates them. Asserts what a UI user sees: states, messages, artifacts, where the
outputs landed, and the catalog's link to each run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, REPO
from tests.prefect_stack import free_port, prefect_stack

pytestmark = pytest.mark.slow
RUN_TIMEOUT_S = 420
AUTH = "fleet:correct-horse-battery"  # the server's PREFECT_SERVER_API_AUTH_STRING
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    translator = {"LIBRE_API_KEY": "unused", "LIBRE_URL": f"http://127.0.0.1:{free_port()}/",  # unreachable
                  "DUB_TRANSLATE_RETRIES": "0"}
    # Prefect's shortest heartbeat; a silent run Crashed soon after; a stopping worker drains briefly
    fleet = {"DUB_RUN_HEARTBEAT": "30", "DUB_RUN_SILENT": "45", "DUB_WORKER_DRAIN": "12"}
    # A shared server is protected by Prefect's API authentication: every client here (the
    # worker, its flow runs, `prefect deploy`, `dub`) has the auth string from its profile.
    with prefect_stack(tmp_path_factory.mktemp("prefect-ui"), {**translator, **fleet}, auth=AUTH) as stack:
        yield stack


@pytest.fixture(scope="module")
def client(setup):
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(setup["api"], auth_string=setup["auth"]) as c:
        yield c


def ad_copy(folder: Path) -> Path:
    """The example with its approved transcript and translations, in a folder of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in EXAMPLE.parent.glob(f"{EXAMPLE.stem}.*"):
        shutil.copy(f, folder / f.name)
    return folder / EXAMPLE.name


def create_run(client, parameters: dict):
    """What the UI's "Run > Custom run" form does: a flow run from the deployment."""
    deployment = client.read_deployment_by_name("dub-video/dub-video")
    return client.create_flow_run_from_deployment(deployment.id, parameters=parameters)


def wait_final(client, run_ids: list, timeout: float = RUN_TIMEOUT_S) -> dict:
    deadline, runs = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        runs = {rid: client.read_flow_run(rid) for rid in run_ids}
        if all(r.state and r.state.type.value in FINAL for r in runs.values()):
            return runs
        time.sleep(1)
    pytest.fail(f"runs not finished in {timeout} s: {[(r.name, r.state.name) for r in runs.values()]}")


def deliveries_of(setup, manifest: str) -> list:
    from polydub.storage import Catalog, deliveries

    cat = Catalog(f"sqlite:///{setup['root'] / 'catalog.db'}")
    try:
        return [r for key in deliveries.manifests(cat) if key.endswith(manifest) for r in deliveries.records(cat, key)]
    finally:
        cat.close()


def catalog_rows(setup) -> dict[str, dict]:
    with sqlite3.connect(setup["root"] / "catalog.db") as db:
        db.row_factory = sqlite3.Row
        return {row["flow_run_id"]: dict(row) for row in db.execute("SELECT * FROM jobs")}


def repo_reports() -> dict[Path, float]:
    """Reports under the project's own `dubbed/` (the README's example writes there)."""
    return {p: p.stat().st_mtime for p in (REPO / "dubbed").rglob("*.report.json")}


@pytest.fixture(scope="module")
def reports_before():
    return repo_reports()


def hold_until(flag: Path, what: str, timeout: float = RUN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not flag.exists():
        assert time.monotonic() < deadline, f"{what} never reached the held stage"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def lost_run(setup, client):
    """A run whose worker is killed with its flow-run process (a lost machine) once its job
    is under way (`kill()`, called by `runs` once its own runs are made, so that the two
    start together); the rest of the module runs while the server notices. Its job is in a
    catalog of its own, which no other `dub` process opens: only the server can end it."""
    root = setup["root"]
    video = long_ad(root / "inputs" / "lost", seconds=6)
    held = root / "inputs" / "lost" / "held"
    worker = subprocess.Popen([sys.executable, "-m", "polydub.cli", "worker", "--pool", "polydub-gpu"],
                              env=setup["env"], cwd=root, stdout=open(root / "lost-worker.log", "wb"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    deployment = client.read_deployment_by_name("dub-video/dub-video-gpu")
    run = client.create_flow_run_from_deployment(
        deployment.id, parameters={"input": str(video), "langs": ["es"], "options": {"voice": "espeak", "lipsync": "off"}},
        job_variables={"env": {"DUB_TEST_HOLD": f"mix:{held}", "DUB_DATABASE_URL": f"sqlite:///{root / 'lost.db'}"}})
    lost = {"run": run}

    def kill() -> None:
        if "killed_at" in lost:
            return
        hold_until(held, "the run on the GPU pool")
        with sqlite3.connect(root / "lost.db") as db:
            [(owner,)] = db.execute("SELECT owner FROM jobs").fetchall()
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        lost["pid"] = pid = int(owner.split(":")[1])
        with contextlib.suppress(ProcessLookupError):  # a lost machine takes every process with it
            os.kill(pid, signal.SIGKILL)
        assert client.read_flow_run(run.id).state.type.value == "RUNNING"
        lost["killed_at"] = time.monotonic()

    lost["kill"] = kill
    try:
        yield lost
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)


KEYED_URL = "s3://AKIDFORMTEST0001:s3cr3t-typed-into-a-form@media/ads/ad.mp4"


@pytest.fixture(scope="module")
def runs(setup, client, reports_before, lost_run):
    root = setup["root"]
    first = ad_copy(root / "inputs" / "a")
    second = ad_copy(root / "inputs" / "b")  # another ad with the same file name
    (second.parent / "talking_head.es.srt").write_text(
        (second.parent / "talking_head.es.srt").read_text().replace("Hola", "Buenas"))
    created = {
        "done": create_run(client, {"input": str(first), "langs": ["es", "fr"], "options": {"voice": "espeak"}}),
        "partial": create_run(client, {"input": str(first), "langs": ["es", "it"],
                                       "options": {"voice": "espeak", "translator": "libre", "out": "partial"}}),
        "missing": create_run(client, {"input": str(root / "inputs" / "nope.mp4"), "langs": ["es"]}),
        "minimal": create_run(client, {"input": str(second), "langs": ["es"]}),  # only the two required fields
        "lipsync": create_run(client, {"input": str(first), "langs": ["es"], "options": {"lipsync": "on"}}),  # no GPU
        "keyed": create_run(client, {"input": KEYED_URL, "langs": ["es"]}),  # a bucket URL with a key in it
    }
    lost_run["kill"]()  # while these run
    finished = wait_final(client, [r.id for r in created.values()])
    return {name: finished[r.id] for name, r in created.items()}


def test_states_tell_the_truth(runs):
    assert runs["done"].state.type.value == "COMPLETED"
    assert runs["minimal"].state.type.value == "COMPLETED"
    partial = runs["partial"].state
    assert partial.type.value == "FAILED" and partial.name == "Partial"
    assert "delivered es" in partial.message and "it: " in partial.message and "libre" in partial.message
    # a refusal in the words of the form the run came from: its fields, not the command line's flags
    assert runs["lipsync"].state.message.startswith("options.lipsync on: lip-sync cannot run: "), runs["lipsync"].state
    assert "--" not in runs["lipsync"].state.message
    for name, text in (("missing", "nope.mp4"), ("lipsync", "options.lipsync on"),
                       ("keyed", "credentials or parameters in the URL are not accepted")):
        state = runs[name].state
        assert state.type.value == "FAILED" and state.name == "Failed", name
        assert text in state.message and "\n" not in state.message
        took = (runs[name].end_time - runs[name].start_time).total_seconds()
        assert took < 30, f"{name} took {took:.1f} s to be refused"


def test_refused_and_partial_runs_log_no_traceback(runs, client):
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    for name in ("missing", "partial"):
        deadline, logs = time.monotonic() + 30, []
        while time.monotonic() < deadline and not any(m.startswith("run ended: ") for m in logs):
            logs = [log.message for log in client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[runs[name].id])), limit=200)]
            time.sleep(1)
        ended = [m for m in logs if m.startswith("run ended: ")]
        assert ended and runs[name].state.message.split(" (job")[0] in ended[0], logs
        assert not any("Traceback" in m for m in logs), [m for m in logs if "Traceback" in m][0][:2000]
        assert not any("welcome+to" in m or "welcome to our" in m for m in logs)  # the script sent to the translator
    assert "welcome" not in runs["partial"].state.message


def test_run_and_task_names_say_what_is_dubbed(runs, client):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    assert runs["done"].name == "talking_head → es,fr"
    tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[runs["partial"].id])))
    by_name = {t.name: t.state.type.value for t in tasks}
    assert by_name["translate[it]"] == "FAILED" and by_name["mix[es]"] == "COMPLETED"
    assert by_name["assemble[es]"] == "COMPLETED" and "mix[it]" not in by_name


def test_artifacts_and_result_show_the_job(runs, client):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    run = runs["done"]
    artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    kinds = {a.type: a for a in artifacts}
    assert {"table", "markdown", "progress"} <= set(kinds)
    table = json.loads(kinds["table"].data) if isinstance(kinds["table"].data, str) else kinds["table"].data
    assert [row["language"] for row in table] == ["es", "fr"]
    assert all(row["status"] == "done" and row["voice"] == "espeak" for row in table)
    assert kinds["progress"].data == 100.0
    assert "| es | done | espeak |" in kinds["markdown"].data
    assert "- es licences: synthesize GPL-3.0-or-later (program)" in kinds["markdown"].data
    report = run.state.result(raise_on_failure=False) if hasattr(run.state, "result") else None
    assert report is None or report["status"] == "done"

    # A Partial run: the bar stops at what was delivered and says so; the table's reason is
    # short enough to leave the other columns on screen, the markdown has all of it.
    partial = runs["partial"]
    kinds = {a.type: a for a in client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[partial.id])))}
    assert kinds["progress"].data == 50.0  # es mixed and delivered, it failed: 2 of 4 steps
    assert kinds["progress"].description == "1 of 2 languages delivered; failed it"
    table = json.loads(kinds["table"].data) if isinstance(kinds["table"].data, str) else kinds["table"].data
    failed = next(row for row in table if row["language"] == "it")["status"]
    assert failed.startswith("failed: translation to it with libre") and len(failed) <= len("failed: ") + 80, failed
    assert "try again later or use another provider" in kinds["markdown"].data


def test_logs_have_one_line_per_stage_and_language(runs, client):
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    labels = ("probe", "transcribe", "translate[es]", "synthesize[fr]", "mix[fr]", "assemble[es]", "assemble")
    deadline, missing = time.monotonic() + 30, labels  # the last lines reach the server as the run ends
    while missing and time.monotonic() < deadline:
        logs = [log.message for offset in (0, 200, 400) for log in client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[runs["done"].id])), limit=200, offset=offset)]
        missing = [label for label in labels
                   if not any(m.startswith((f"{label}: done in", f"{label}: cached in")) for m in logs)]
        time.sleep(1)
    assert not missing, logs
    assert not any("Traceback" in m for m in logs)


def test_outputs_land_under_the_outputs_root_one_folder_per_job(runs, setup, reports_before):
    root, rows = setup["root"], catalog_rows(setup)
    done, minimal, partial = (rows[str(runs[n].id)] for n in ("done", "minimal", "partial"))
    assert Path(done["out_dir"]) == root / "outputs" / "talking_head" / f"job-{done['id']}"
    assert Path(minimal["out_dir"]) == root / "outputs" / "talking_head" / f"job-{minimal['id']}"
    assert Path(partial["out_dir"]) == root / "outputs" / "partial" / f"job-{partial['id']}"
    first_srt = Path(done["out_dir"]) / "talking_head.es.srt"
    second_srt = Path(minimal["out_dir"]) / "talking_head.es.srt"
    assert "Hola" in first_srt.read_text() and "Buenas" in second_srt.read_text()  # neither overwrote the other
    assert repo_reports() == reports_before  # nothing written into the project's own folder


def test_catalog_points_at_each_run(runs, setup):
    rows = catalog_rows(setup)
    assert rows[str(runs["done"].id)]["status"] == "done"
    assert rows[str(runs["done"].id)]["deployment"] == "dub-video/dub-video"
    assert rows[str(runs["partial"].id)]["status"] == "partial"
    for name in ("missing", "lipsync", "keyed"):  # refused on the input, and on what the machine can run
        row = rows[str(runs[name].id)]
        assert row["status"] == "rejected" and row["error"] in runs[name].state.message
    secret = KEYED_URL.split(":")[2].split("@")[0]
    assert secret not in runs["keyed"].state.message and secret not in json.dumps(rows[str(runs["keyed"].id)])
    shown = subprocess.run([sys.executable, "-m", "polydub.cli", "show", str(rows[str(runs["done"].id)]["id"])],
                           env=setup["env"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert f"{setup['api'][:-4]}/runs/flow-run/{runs['done'].id}" in shown.stdout


def test_a_run_that_sets_one_option_keeps_the_deployments_others(runs, setup):
    """The form's `options` replace the deployment's whole object in Prefect; the run merges
    them back: `voice` set by the run, `lipsync: off` kept from prefect.yaml."""
    params = json.loads(catalog_rows(setup)[str(runs["done"].id)]["params"])
    assert (params["voice"], params["lipsync"]) == ("espeak", "off")
    assert runs["done"].parameters["options"] == {"voice": "espeak"}  # what Prefect itself holds


def test_the_form_shows_fields_that_may_be_left_empty_as_plain_fields(client):
    """The run form's optional options are plain fields (left empty: the default), not a
    choice between their type and null; `commercial` stays a three-way choice (unset: the
    machine's setting)."""
    deployment = client.read_deployment_by_name("dub-video/dub-video")
    schema = deployment.parameter_openapi_schema
    [options] = [d for d in schema["definitions"].values() if d.get("title") == "Options"]
    nullable = sorted(name for name, prop in options["properties"].items() if {"type": "null"} in prop.get("anyOf", []))
    assert nullable == ["commercial"]
    assert options["properties"]["source_lang"]["type"] == "string" and options["properties"]["loudness"]["type"] == "number"


def test_the_nightly_deployment_can_be_switched_on(client):
    deployment = client.read_deployment_by_name("dub-catalog/nightly-catalog")
    assert [s.active for s in deployment.schedules] == [False]
    assert deployment.schedules[0].schedule.cron == "0 2 * * *"


def test_the_nightly_catalog_run_dubs_what_is_new_then_nothing(setup, client, runs):
    """What the schedule starts, started by hand twice: the first run dubs the example
    manifest's item, the second finds it up to date and starts no job."""
    deployment = client.read_deployment_by_name("dub-catalog/nightly-catalog")
    first = client.create_flow_run_from_deployment(deployment.id)
    done = wait_final(client, [first.id])[first.id]
    assert done.state.type.value == "COMPLETED", done.state.message
    assert "3 dubbed" in done.state.message
    out = setup["root"] / "outputs" / "catalog" / "talking-head"
    assert sorted(p.name for p in out.glob("job-*/*.mp4")) == [f"talking_head.{lang}.mp4" for lang in ("de", "es", "fr")]
    jobs_before = len(catalog_rows(setup))
    again = client.create_flow_run_from_deployment(deployment.id)
    rerun = wait_final(client, [again.id])[again.id]
    assert rerun.state.type.value == "COMPLETED" and "3 up to date" in rerun.state.message
    assert len(catalog_rows(setup)) == jobs_before
    artifacts = {a.key for a in client.read_artifacts() if a.flow_run_id == again.id}
    assert {"catalog-catalog", "catalog-report-catalog"} <= artifacts
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = [log.message for log in client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[first.id])))]
    assert any(m.startswith("catalog: 1 item (3 missing); 1 to dub") for m in logs), logs
    assert any(m.startswith("item talking-head: delivered es, fr, de (job ") for m in logs), logs


def test_a_bad_catalog_run_from_the_form_fails_before_any_work(setup, client, runs, tmp_path):
    """The form's manifest and bounds are checked before any work: Failed, one line, no job."""
    bad = setup["root"] / "inputs" / "bad.csv"
    bad.write_text("id,input,langs\nspot,missing.mp4,es\nspot,missing.mp4,xx-nope\n")
    deployment = client.read_deployment_by_name("dub-catalog/nightly-catalog")
    jobs_before = len(catalog_rows(setup))
    refused = client.create_flow_run_from_deployment(deployment.id, parameters={"manifest": str(bad)})
    done = wait_final(client, [refused.id])[refused.id]
    assert done.state.type.value == "FAILED"
    assert done.state.message.startswith(f"{bad}: 4 problems: bad.csv row 2, column input: ")
    assert "\n" not in done.state.message
    assert len(catalog_rows(setup)) == jobs_before
    with pytest.raises(Exception, match="concurrency"):  # out of bounds: the API refuses the run itself
        client.create_flow_run_from_deployment(deployment.id, parameters={"concurrency": 99})


def test_a_catalog_handed_to_workers_through_the_deployment(setup, client, runs, tmp_path):
    folder = setup["root"] / "inputs" / "catalog"
    video = ad_copy(folder / "videos")
    (folder / "spots.csv").write_text("id,input,langs,voice\n"
                                      f"spot-1,{video},\"es,fr\",espeak\n"
                                      f"spot-2,{video},de,espeak\n")
    result = subprocess.run([sys.executable, "-m", "polydub.cli", "catalog", str(folder / "spots.csv"),
                             "--via-deployment", "dub-video", "--json"], capture_output=True, text=True,
                            timeout=RUN_TIMEOUT_S, env=setup["env"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {(r["item"], r["language"]): r for r in json.loads(result.stdout)["rows"]}
    assert set(rows) == {("spot-1", "es"), ("spot-1", "fr"), ("spot-2", "de")}
    for (item, lang), row in rows.items():
        assert row["status"] == "dubbed", row
        output = Path(row["output"])
        assert output.is_file() and output.name == f"talking_head.{lang}.mp4"
        assert output.parent.parent == setup["root"] / "outputs" / "spots" / item  # .../job-N/
    jobs = {row["id"]: row for row in catalog_rows(setup).values()}
    assert {jobs[r["job"]]["deployment"] for r in rows.values()} == {"dub-video/dub-video"}
    # The catalog run's page links each item's run (a worker's run of the deployment).
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    catalog_run = json.loads(result.stdout)["flow_run"]
    [page] = [a.data for a in client.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[catalog_run]))) if a.type == "markdown"]
    ui = setup["api"].removesuffix("/api")
    for item in ("spot-1", "spot-2"):
        [item_run] = {jobs[r["job"]]["flow_run_id"] for (i, _), r in rows.items() if i == item}
        assert f"- [{item}]({ui}/runs/flow-run/{item_run})" in page, page
    (video.parent / "talking_head.de.srt").write_text("1\n00:00:00,500 --> 00:00:02,800\nHallo!\n")
    wrong = subprocess.run([sys.executable, "-m", "polydub.cli", "catalog", str(folder / "spots.csv"),
                            "--via-deployment", "no-such-deployment"], capture_output=True, text=True,
                           timeout=RUN_TIMEOUT_S, env=setup["env"], cwd=tmp_path)
    assert wrong.returncode == 2
    assert wrong.stderr.strip().endswith("--via-deployment no-such-deployment: no deployment "
                                         "dub-video/no-such-deployment (see `prefect deployment ls`)")
    assert [r.status for r in deliveries_of(setup, "spots.csv") if r.item == "spot-2"] == ["done"]  # not claimed


def test_a_catalog_via_the_deployment_leaves_each_review_to_a_person(setup, runs, tmp_path):
    """A catalog item under final review, run by a worker: the runner does not wait for the
    suspended run; the item is awaiting review (with how to decide); `dub approve` resumes
    the run, which delivers and records the item done."""
    folder = setup["root"] / "inputs" / "catalog-review"
    video = ad_copy(folder / "videos")
    (folder / "reviewed.csv").write_text(f"id,input,langs,voice,review\nspot-1,{video},es,espeak,final\n")

    def dub(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "polydub.cli", *args], capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S, env=setup["env"], cwd=tmp_path)

    result = dub("catalog", str(folder / "reviewed.csv"), "--via-deployment", "dub-video", "--json")
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)["rows"]
    job = row["job"]
    assert row["status"] == "awaiting review" and f"dub review {job}" in row["error"] and "/runs/flow-run/" in row["error"]
    [cell] = [r for r in deliveries_of(setup, "reviewed.csv")]
    assert cell.status == "awaiting review"
    approved = dub("approve", str(job))
    assert approved.returncode == 0 and "its flow run goes on" in approved.stderr, approved.stderr
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (cell := deliveries_of(setup, "reviewed.csv")[0]).status != "done":
        assert time.monotonic() < deadline, cell
        time.sleep(1)
    assert Path(cell.path).is_file() and cell.job_id == job


def long_ad(folder: Path, seconds: int = 240) -> Path:
    """A small video with a line every 2 s and its approved Spanish script."""
    folder.mkdir(parents=True, exist_ok=True)
    video = folder / "long_ad.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc=size=96x64:rate=10:duration={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=220:duration={seconds}", "-shortest", "-c:v", "libx264",
                    "-c:a", "aac", str(video)], check=True, timeout=120)
    for lang, text in (("en", "This is line {} of a long advertisement."), ("es", "Esta es la línea {} de un anuncio.")):
        cues = [f"{i + 1}\n00:{i * 2 // 60:02d}:{i * 2 % 60:02d},100 --> 00:{i * 2 // 60:02d}:{i * 2 % 60:02d},900\n"
                f"{text.format(i + 1)}\n" for i in range(seconds // 2)]
        (folder / f"long_ad.{lang}.srt").write_text("\n".join(cues))
    return video


def wait_suspended(client, run_id, key: str):
    """The run's state once it waits for the review `key`, its form saved (Prefect sets the
    state first, then saves the form)."""
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.input.run_input import keyset_from_paused_state

    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (state := client.read_flow_run(run_id).state).type.value != "PAUSED" or state.state_details.pause_key != key:
        assert state.type.value not in FINAL, f"{state.name}: {state.message}"
        assert time.monotonic() < deadline, f"the run never waited for {key}"
        time.sleep(0.5)
    while True:
        try:
            client.read_flow_run_input(run_id, keyset_from_paused_state(state)["description"])
            return state
        except PrefectHTTPStatusError as exc:
            assert exc.response.status_code == 404 and time.monotonic() < deadline, f"no form of {key}: {exc}"
            time.sleep(0.2)


def test_a_script_review_suspends_the_run_and_its_form_or_dub_resumes_it(setup, client, runs):
    """`review: both` in a deployment run into it and pt: the run is Suspended (holding no
    worker) with a form of the translated it lines; resumed with an edited line as the UI's
    form sends it, it starts again, records the decision and waits for pt; `dub reject`
    answers that one; then it waits for approval of the delivered it dub; approved, the run
    ends Partial, it delivered with the edited line."""
    from prefect.input.run_input import keyset_from_paused_state

    from tests.services import libre_echo

    video = ad_copy(setup["root"] / "inputs" / "review")
    with libre_echo() as libre:
        run = client.create_flow_run_from_deployment(
            client.read_deployment_by_name("dub-video/dub-video").id,
            parameters={"input": str(video), "langs": ["it", "pt"],
                        "options": {"voice": "espeak", "translator": "libre", "review": "both"}},
            job_variables={"env": {"LIBRE_URL": libre.url}})
        state = wait_suspended(client, run.id, "review-it")
        assert state.name == "Suspended"
        job = catalog_rows(setup)[str(run.id)]
        assert job["status"] == "awaiting review"
        keys = keyset_from_paused_state(state)
        form = json.loads(client.read_flow_run_input(run.id, keys["schema"]))
        lines = form["properties"]["lines"]["default"]
        assert [line["text"] for line in lines] == [line["source"] for line in lines]  # the echo "translated"
        assert "Review the it script of job" in json.loads(client.read_flow_run_input(run.id, keys["description"]))
        lines[0]["text"] = "Ciao e benvenuti."
        client.resume_flow_run(run.id, run_input={"approve": True, "reviewer": "Giulia", "lines": lines})

        wait_suspended(client, run.id, "review-pt")
        def dub(*args: str) -> subprocess.CompletedProcess:  # the worker's catalog and Prefect server
            return subprocess.run([sys.executable, "-m", "polydub.cli", *args], capture_output=True, text=True,
                                  timeout=120, env={**setup["env"], "DUB_REVIEWER": "Pedro"})

        early = dub("approve", str(job["id"]), "--lang", "it")
        assert early.returncode == 2 and f"job {job['id']} has no it script awaiting review (awaiting: pt)" \
            in early.stderr, early.stderr
        rejected = dub("reject", str(job["id"]), "--why", "wrong market")
        assert rejected.returncode == 0, rejected.stderr
        assert "pt: script rejected by Pedro" in rejected.stderr and "its flow run goes on" in rejected.stderr

        state = wait_suspended(client, run.id, "final-it")  # the delivered it dub, for a person to watch
        description = json.loads(client.read_flow_run_input(run.id, keyset_from_paused_state(state)["description"]))
        assert "Approve the it dub of job" in description and "talking_head.it.mp4" in description
        client.resume_flow_run(run.id, run_input={"approve": True, "reviewer": "Giulia"})
        final = wait_final(client, [run.id])[run.id]
    assert final.state.type.value == "FAILED" and final.state.name == "Partial", final.state.message
    assert "pt: script rejected by Pedro: wrong market" in final.state.message
    job = catalog_rows(setup)[str(run.id)]
    assert job["status"] == "partial"
    delivered = Path(job["out_dir"]) / "talking_head.it.srt"
    assert "Ciao e benvenuti." in delivered.read_text(encoding="utf-8")
    assert not (Path(job["out_dir"]) / "talking_head.pt.mp4").exists()
    with sqlite3.connect(setup["root"] / "catalog.db") as db:
        decided = {row[0]: row[1:] for row in db.execute(
            "SELECT lang, status, decided_by, changes FROM reviews WHERE job_id = ? AND kind = 'script'", (job["id"],))}
    assert decided["it"][:2] == ("approved", "Giulia") and json.loads(decided["it"][2])[0]["after"] == "Ciao e benvenuti."
    assert decided["pt"][:2] == ("rejected", "Pedro")
    with sqlite3.connect(setup["root"] / "catalog.db") as db:
        kinds = db.execute("SELECT lang, kind, status, decided_by FROM reviews WHERE job_id = ? ORDER BY id",
                           (job["id"],)).fetchall()
    assert kinds == [("it", "script", "approved", "Giulia"), ("pt", "script", "rejected", "Pedro"),
                     ("it", "final", "approved", "Giulia")]


def test_a_run_whose_worker_and_process_were_killed_ends_crashed_on_the_server_alone(setup, client, lost_run):
    """No `dub` command, no worker: the server's automation (made by `dub worker`) marks the
    silent run Crashed within DUB_RUN_SILENT of its last heartbeat (30 s apart)."""
    lost_run["kill"]()
    run_id = lost_run["run"].id
    deadline = lost_run["killed_at"] + 45 + 30 + 30  # silence + a heartbeat's spacing + the trigger's sweep
    while (state := client.read_flow_run(run_id).state).type.value == "RUNNING":
        assert time.monotonic() < deadline, "the killed run is still Running"
        time.sleep(1)
    assert state.type.value == "CRASHED", state
    assert state.message.startswith("no heartbeat for 45 s: the run's process is gone"), state.message
    with sqlite3.connect(setup["root"] / "lost.db") as db:  # nobody has opened its catalog since
        assert db.execute("SELECT status FROM jobs").fetchall() == [("running",)]
    [automation] = [a for a in client.read_automations() if a.name.startswith("polydub:")]
    assert automation.trigger.within.total_seconds() == 45  # one, though two workers started

    # The catalog follows as soon as a dub process reads it; the server's state is kept.
    shown = subprocess.run([sys.executable, "-m", "polydub.cli", "list", "--json", "--db",
                            f"sqlite:///{setup['root'] / 'lost.db'}"], env=setup["env"], capture_output=True,
                           text=True, timeout=120)
    [job] = json.loads(shown.stdout)
    assert job["status"] == "interrupted" and f"pid {lost_run['pid']}) is gone" in job["error"], job


def test_a_worker_that_cannot_run_a_deployment_says_why_in_the_run(setup, client, runs):
    """A deployment made from a folder this machine lacks: the run fails at once, the
    folder and the machine named in its state and its own log (not a crash under a
    traceback that names neither)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    good = client.read_deployment_by_name("dub-video/dub-video")
    elsewhere = setup["root"] / "deployed-on-another-machine"
    deployment_id = client.create_deployment(
        flow_id=good.flow_id, name="elsewhere", entrypoint=good.entrypoint, work_pool_name="polydub-cpu",
        pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(elsewhere)}}],
        parameter_openapi_schema=good.parameter_openapi_schema)
    run = client.create_flow_run_from_deployment(deployment_id, parameters={"input": "ad.mp4", "langs": ["es"]})
    final = wait_final(client, [run.id], timeout=120)[run.id]
    assert final.state.type.value == "FAILED", final.state
    assert f"cannot run deployment 'elsewhere': its folder {elsewhere} (where `prefect deploy` ran)" in final.state.message
    deadline, logs = time.monotonic() + 30, []
    while time.monotonic() < deadline and not any(elsewhere.name in m for m in logs):
        time.sleep(0.5)
        logs = [entry.message for entry in client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))]
    assert any(m == final.state.message for m in logs), logs


def test_a_stopping_worker_lets_its_runs_finish_then_cancels_what_is_left(setup, client, runs):
    """SIGTERM to the worker alone (a service manager's stop): no new run is taken; a run
    that finishes within DUB_WORKER_DRAIN (12 s here) completes; one that does not is
    cancelled (as the UI's Cancel does it) and its job recorded cancelled; nothing is left
    Running; the worker exits 0."""
    worker, root = setup["worker"], setup["root"]
    deployment = client.read_deployment_by_name("dub-video/dub-video")
    held = {}
    for name, seconds in (("finishing", 4), ("endless", 8)):  # not the same video: not the same cache entries
        video = long_ad(root / "inputs" / name, seconds=seconds)
        held[name] = (root / "inputs" / name / "held", client.create_flow_run_from_deployment(
            deployment.id, parameters={"input": str(video), "langs": ["es"], "options": {"voice": "espeak"}},
            job_variables={"env": {"DUB_TEST_HOLD": f"mix:{root / 'inputs' / name / 'held'}"}}))
    for name, (flag, _) in held.items():
        hold_until(flag, name)
    os.kill(worker.pid, signal.SIGTERM)
    log = root / "worker.log"
    deadline = time.monotonic() + 30
    while "stopping: no new runs; 2 in flight" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
    late = create_run(client, {"input": str(ad_copy(root / "inputs" / "late")), "langs": ["es"]})
    held["finishing"][0].unlink()  # this one finishes while the worker drains
    assert worker.wait(timeout=120) == 0
    finished = wait_final(client, [held["finishing"][1].id, held["endless"][1].id], timeout=60)
    assert finished[held["finishing"][1].id].state.type.value == "COMPLETED"
    endless = finished[held["endless"][1].id]
    assert endless.state.type.value == "CANCELLED", endless.state
    assert client.read_flow_run(late.id).state.type.value == "SCHEDULED"  # left for another worker
    # Cancelled as from the UI (Cancelling, then the worker stops its process): the catalog
    # says cancelled, and the stage it stopped is interrupted, not failed.
    deadline = time.monotonic() + 30
    while catalog_rows(setup)[str(endless.id)]["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    row = catalog_rows(setup)[str(endless.id)]
    assert row["status"] == "cancelled" and "cancelled" in row["error"], row
    with sqlite3.connect(setup["root"] / "catalog.db") as db:
        stages = dict(db.execute("SELECT stage, status FROM stage_runs WHERE job_id = ?", (row["id"],)).fetchall())
    assert stages["mix"] == "interrupted" and "failed" not in stages.values(), stages
    text = log.read_text()
    assert "Traceback" not in text
    assert text.startswith("dub worker: pool polydub-cpu, no limit on runs at once\n")  # --limit 0
    assert "dub worker: cancelled 1 run(s) still in flight: long_ad → es\n" in text and text.rstrip().endswith("dub worker: stopped")


def test_a_client_without_the_servers_auth_string_is_refused_in_one_line(setup, tmp_path):
    """The server answers its health check to anyone and refuses everything else to a client
    without its auth string: `dub`, `dub worker` and the catalog runner ask it something real
    first and say so in one line before any work, never showing the string."""
    from tests import inprocess

    video = ad_copy(tmp_path / "videos")
    (tmp_path / "spots.csv").write_text(f"id,input,langs,voice\nspot-1,{video},es,espeak\n")
    commands = {"dub": (str(video), "--langs", "es", "--out", str(tmp_path / "out")),
                "dub worker": ("worker", "--pool", "polydub-cpu"),
                "dub catalog": ("catalog", str(tmp_path / "spots.csv"), "--via-deployment", "dub-video")}
    for given, expected in ((None, "requires API authentication: set PREFECT_API_AUTH_STRING"),
                            ("fleet:wrong-guess", "refuses the auth string in Prefect profile 'team'")):
        home = tmp_path / f"home-{given is not None}"
        home.mkdir()
        profile = f'active = "team"\n[profiles.team]\nPREFECT_API_URL = "{setup["api"]}"\n'
        (home / "profiles.toml").write_text(profile + (f'PREFECT_API_AUTH_STRING = "{given}"\n' if given else ""))
        env = {"PREFECT_HOME": str(home), "PREFECT_API_URL": None, "PREFECT_API_AUTH_STRING": None,
               "DUB_HOME": str(tmp_path / "dub-home"), "DUB_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"}
        for name, args in commands.items():
            result = inprocess.dub(*args, env=env, cwd=tmp_path)
            line = result.stderr.strip()
            assert result.returncode == 1 and "\n" not in line, (name, result.stderr)
            assert expected in line and setup["api"] in line, (name, line)
            assert AUTH not in line and "wrong-guess" not in line, line
    assert not (tmp_path / "out").exists()
