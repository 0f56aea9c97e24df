"""The options model: every bound and choice, and one job whichever way it is asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest
from prefect.utilities.callables import parameter_schema

from polydub.errors import InputError
from polydub.flows.dub import dub_video
from polydub.job import plan_job
from polydub.options import FLAGS, PATH_OPTIONS, DubOptions, make_options
from polydub.translate.providers import PROVIDERS
from tests.conftest import EXAMPLE


@pytest.mark.parametrize("field, value, message", [
    ("max_speed", 0.99, "--max-speed must be between 1.0 and 2.0, not 0.99"),
    ("max_speed", 2.01, "--max-speed must be between 1.0 and 2.0, not 2.01"),
    ("loudness", -40.5, "--loudness must be between -40 and -5 LUFS, not -40.5"),
    ("loudness", -4.0, "--loudness must be between -40 and -5 LUFS, not -4.0"),
    ("lipsync", "sometimes", "--lipsync must be one of auto, on, off, not 'sometimes'"),
    ("voice", "festival", "unknown voice 'festival'"),
    ("voice", "coqui:", "unknown voice 'coqui:'"),
    ("translator", "babelfish", "unknown translator 'babelfish'"),
    ("translator", "local:", "unknown translator 'local:'"),
    ("consent", "x" * 5000, "--consent: String should have at most 4096 characters"),
    ("db", "postgresql://u:secret@host/db", "unknown option 'db'"),  # the catalog is never an option
])
def test_each_bound_and_choice_is_refused_in_one_line(field, value, message):
    with pytest.raises(InputError) as caught:
        make_options({field: value})
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("field, value", [
    ("max_speed", 1.0), ("max_speed", 2.0), ("loudness", -40), ("loudness", -5), ("lipsync", "off"),
    ("voice", "espeak"), ("voice", "espeak:en-us"), ("voice", "coqui:/models/vits"), ("translator", "deepl"),
    ("translator", "local:opus-mt-en-es"),
])
def test_edges_and_choices_are_accepted(field, value):
    assert getattr(make_options({field: value}), field) == value


def test_translator_choices_are_the_providers():
    schema = DubOptions.model_json_schema()
    choices = schema["properties"]["translator"]["anyOf"][0]["enum"]
    assert choices == list(PROVIDERS)


def test_the_form_shows_choices_bounds_and_defaults():
    schema = parameter_schema(dub_video.fn).model_dump_for_openapi()
    assert schema["required"] == ["input", "langs"]  # a run with only these two works
    assert "db" not in schema["properties"] and "out" not in schema["properties"]
    fields = schema["definitions"]["DubOptions"]["properties"]
    assert fields["lipsync"]["enum"] == ["auto", "on", "off"] and fields["lipsync"]["default"] == "auto"
    assert fields["voice"]["anyOf"][0]["enum"] == ["auto", "chatterbox", "espeak", "kokoro"]
    assert fields["max_speed"]["minimum"] == 1.0 and fields["max_speed"]["maximum"] == 2.0
    number = fields["loudness"]  # a plain number field; left empty: match the source
    assert number["type"] == "number" and "anyOf" not in number
    assert number["minimum"] == -40 and number["maximum"] == -5 and fields["loudness"]["default"] is None
    assert fields["commercial"]["default"] is None  # unset: the worker's DUB_COMMERCIAL
    assert "NAME.<lang>.srt" in fields["translations"]["description"]
    assert "<source-lang>" in fields["transcript"]["description"]
    assert "ISO 639-1" in schema["properties"]["langs"]["description"]


def test_the_command_line_and_the_form_make_the_same_job(tmp_path):
    """`dub --voice espeak --max-speed 1.5 ...` and a form with the same values plan one job."""
    form = {"voice": "espeak", "max_speed": 1.5, "lipsync": "off", "out": str(tmp_path / "o")}
    from_form = plan_job(str(EXAMPLE), ["es", "fr"], form)
    code = ("import json, sys; from polydub.job import plan_job; "
            "print(json.dumps(plan_job(sys.argv[1], 'es,fr', None, voice='espeak', max_speed=1.5, "
            "lipsync='off', out=sys.argv[2]).to_dict()))")
    shown = subprocess.run([sys.executable, "-c", code, str(EXAMPLE), str(tmp_path / "o")], capture_output=True,
                           text=True, timeout=120, check=True).stdout
    import json

    assert json.loads(shown) == from_form.to_dict()
    assert from_form.options.voice == "espeak" and from_form.options.max_speed == 1.5 and from_form.translations  # sidecars found


def test_a_form_out_cannot_leave_the_outputs_root(tmp_path):
    root = tmp_path / "outputs"
    assert plan_job(str(EXAMPLE), ["es"], {"out": "campaign"}, outputs_root=root).out_dir == str(root / "campaign")
    assert plan_job(str(EXAMPLE), ["es"], None, outputs_root=root).out_dir == str(root / EXAMPLE.stem)
    for out in ("../elsewhere", "/etc", "campaign/../../x", "~/x"):
        with pytest.raises(InputError, match="outputs root"):
            plan_job(str(EXAMPLE), ["es"], {"out": out}, outputs_root=root)


def test_every_option_is_a_flag_of_dub_run_with_the_models_help_and_default():
    import typer

    from polydub.cli import app
    from polydub.options import FLAGS

    command = typer.main.get_command(app).commands["run"]
    by_flag = {opt: param for param in command.params for opt in param.opts}
    for name, field in DubOptions.model_fields.items():
        param = by_flag[FLAGS[name]]
        if name != "out":  # --out is the command line's own: one subfolder per input
            assert param.name == name and param.help == field.description and param.default == field.default
    assert by_flag["--commercial"].secondary_opts == ["--non-commercial"]


@pytest.mark.parametrize("name", [*PATH_OPTIONS, "asr_model", "source_lang", "consent"])
def test_a_nul_byte_in_any_path_or_text_option_is_refused_in_one_line(name):
    """However the job is asked for: keyword options (the command line), a form's dict, a manifest."""
    for asked in ({name: "dubs\0/x"}, make_options(None)):
        with pytest.raises(InputError) as caught:
            plan_job(str(EXAMPLE), ["es"], asked, **({} if isinstance(asked, dict) else {name: "dubs\0/x"}))
        assert str(caught.value) == f"{FLAGS[name]}: a NUL byte is not allowed"


def test_the_form_refuses_a_nul_byte_before_a_run_is_made():
    """Prefect checks a deployment run's parameters against the form's schema (as its server
    does when a run is created) and against the model as the run starts."""
    from prefect.utilities.schema_tools.validation import validate

    schema = parameter_schema(dub_video.fn).model_dump_for_openapi()
    good = {"input": str(EXAMPLE), "langs": ["es"], "options": {"out": "campaign"}}
    assert validate(good, schema) == []
    for name in PATH_OPTIONS:
        assert validate({**good, "options": {name: "campaign\0"}}, schema), name
    for voice in ("coqui:/models/x\0", "espeak:en\0"):
        with pytest.raises(InputError, match="unknown voice"):
            make_options({"voice": voice})
