"""Translation: batching, retries, glossary, providers and a local Marian model.

The local model is a random-weight MarianMT built here (sentencepiece trained on a few
hundred words); online services are only constructed, never called.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import requests
from deep_translator.exceptions import TooManyRequests

from polydub import translate
from polydub.errors import InputError, StageError
from polydub.segments import Segment, write_subtitles
from polydub.translate import (
    align_approved,
    load_glossary,
    make_translator,
    translate_segments,
)
from polydub.translate.local import NLLB_CODES
from tests.tiny_models import WORDS, build_tiny_marian


class RecordingTranslator:
    """Our `Translator` interface in its simplest form: 'translates' by upper-casing,
    records every request, and can be told to fail or to return the wrong line count."""

    name = "recorder"
    version = "1"

    def __init__(self, fail_first: int = 0, error: Exception | None = None, mangle=None,
                 max_chars: int | None = None):
        self.calls: list[list[str]] = []
        self.fail_first = fail_first
        self.error = error or TooManyRequests()
        self.mangle = mangle
        if max_chars:
            self.max_chars = max_chars

    def translate_batch(self, texts, source, target):
        self.calls.append(list(texts))
        if len(self.calls) <= self.fail_first:
            raise self.error
        out = [t.upper() for t in texts]
        return self.mangle(out) if self.mangle else out


def lines(n: int) -> list[Segment]:
    rng = random.Random(n)
    return [Segment(i * 2.0, i * 2.0 + 1.5, " ".join(rng.choice(WORDS) for _ in range(5)))
            for i in range(n)]


@pytest.fixture
def waits(monkeypatch) -> list[float]:
    """Backoff delays asked for, without waiting them."""
    asked: list[float] = []
    monkeypatch.setattr(translate, "sleep", asked.append)
    return asked


# --- batching -----------------------------------------------------------------------------

def test_lines_travel_in_few_requests_under_the_size_limit():
    segments = lines(200)
    tr = RecordingTranslator()
    out = translate_segments(segments, "en", "es", tr, max_chars=1000)
    assert [s.text for s in out] == [s.text.upper() for s in segments]
    assert [(s.start, s.end) for s in out] == [(s.start, s.end) for s in segments]
    assert len(tr.calls) <= 12  # ~30 characters a line: ~33 lines a request, not 200 requests
    assert sum(len(c) for c in tr.calls) == 200
    assert all(len("\n".join(c)) <= 1000 for c in tr.calls)


def test_translator_limit_lowers_the_request_size():
    tr = RecordingTranslator(max_chars=200)
    translate_segments(lines(60), "en", "fr", tr, max_chars=4500)
    assert all(len("\n".join(c)) <= 200 for c in tr.calls)
    assert len(tr.calls) > 5


def test_wrong_line_count_is_redone_in_smaller_batches_for_that_chunk_only():
    segments = lines(40)
    bad = segments[5].text.upper()

    def merge_two(out):  # a service that glued line 5 to line 6
        if bad in out and len(out) > 1:
            i = out.index(bad)
            return out[:i] + [out[i] + " " + out[i + 1]] + out[i + 2:]
        return out

    tr = RecordingTranslator(mangle=merge_two)
    per_chunk = 20 * 32  # first chunk holds line 5, the second does not
    out = translate_segments(segments, "en", "de", tr, max_chars=per_chunk)
    assert len(out) == 40
    assert [s.text for s in out if s.text != bad] == [s.text.upper() for s in segments
                                                        if s.text.upper() != bad]
    assert out[5].text == bad  # translated alone in the end
    later = [c for c in tr.calls if segments[-1].text in c]
    assert len(later) == 1  # the chunk that came back right was sent once
    assert any(c == [segments[5].text] for c in tr.calls)
    assert len(tr.calls) < 40


# --- retries ------------------------------------------------------------------------------

def test_rate_limits_are_retried_with_growing_waits(waits):
    tr = RecordingTranslator(fail_first=2)
    out = translate_segments(lines(10), "en", "es", tr)
    assert len(out) == 10 and out[0].text == lines(10)[0].text.upper()
    assert len(tr.calls) == 3
    assert len(waits) == 2 and 0 < waits[0] <= waits[1] <= translate.BACKOFF_MAX_S


def test_dropped_connections_are_retried(waits):
    tr = RecordingTranslator(fail_first=1, error=requests.ConnectionError("connection reset"))
    out = translate_segments(lines(3), "en", "es", tr)
    assert len(tr.calls) == 2 and len(out) == 3


def test_retries_are_bounded_and_end_in_one_line_error(waits):
    tr = RecordingTranslator(fail_first=10**6)
    with pytest.raises(StageError) as err:
        translate_segments(lines(10), "en", "es", tr)
    message = str(err.value)
    assert len(tr.calls) == translate.RETRIES + 1
    assert len(waits) == translate.RETRIES
    assert "recorder" in message and " es " in message and "TooManyRequests" in message
    assert "\n" not in message


def test_other_errors_are_not_retried(waits):
    tr = RecordingTranslator(fail_first=10**6, error=ValueError("bad credentials"))
    with pytest.raises(StageError, match="recorder failed: ValueError: bad credentials"):
        translate_segments(lines(4), "en", "es", tr)
    assert len(tr.calls) == 1 and waits == []


def test_unknown_language_fails_before_any_request():
    tr = RecordingTranslator()
    with pytest.raises(InputError, match="unknown language code 'xx'"):
        translate_segments(lines(3), "en", "xx", tr)
    assert tr.calls == []


# --- glossary -----------------------------------------------------------------------------

def test_glossary_terms_are_forced_or_kept_whatever_the_translator_does():
    segments = [Segment(0, 1, "Welcome to Acme Cloud, friends"),
                Segment(1, 2, "ACME cloud has a new launch"),
                Segment(2, 3, "Acme Cloudy is not a glossary term")]
    glossary = {"acme cloud": "", "launch": "lanzamiento", "Welcome": "Bienvenidos"}
    tr = RecordingTranslator()
    out = translate_segments(segments, "en", "es", tr, glossary=glossary)
    assert out[0].text == "Bienvenidos TO Acme Cloud, FRIENDS"
    assert out[1].text == "ACME cloud HAS A NEW lanzamiento"  # kept as written in the line
    assert out[2].text == "ACME CLOUDY IS NOT A GLOSSARY TERM"
    sent = " ".join(t for c in tr.calls for t in c)
    assert "Acme Cloud," not in sent and "launch" not in sent


def test_lost_placeholders_fall_back_to_translating_around_the_terms():
    drop = lambda out: [re.sub(r"\u27e6\d+\u27e7", "", t) for t in out]  # noqa: E731
    tr = RecordingTranslator(mangle=drop)
    segments = [Segment(0, 1, "we use Acme Cloud every day."), Segment(1, 2, "no terms here")]
    out = translate_segments(segments, "en", "es", tr, glossary={"Acme Cloud": "NubeAcme"})
    assert out[0].text == "WE USE NubeAcme EVERY DAY."
    assert out[1].text == "NO TERMS HERE"
    assert len(tr.calls) == 2  # the whole batch, then the stretches around the terms


def test_load_glossary_formats(tmp_path):
    tsv = tmp_path / "g.tsv"
    tsv.write_text("# brand names\nAcme Cloud\t\nlaunch\tlanzamiento\n\nteam\tequipo\n")
    assert load_glossary(tsv) == {"Acme Cloud": "", "launch": "lanzamiento", "team": "equipo"}
    csv_file = tmp_path / "g.csv"
    csv_file.write_text('term,translation\nAcme,\n"sign up, now",regístrate\n')
    assert load_glossary(csv_file) == {"Acme": "", "sign up, now": "regístrate"}
    js = tmp_path / "g.json"
    js.write_text(json.dumps({"Acme": "", "launch": "lancement", "PolyDub": None}))
    assert load_glossary(js) == {"Acme": "", "launch": "lancement", "PolyDub": ""}


@pytest.mark.parametrize("name, text, message", [
    ("bad.json", "{not json", "not valid JSON"),
    ("list.json", '["Acme"]', "must be an object"),
    ("wide.tsv", "a\tb\tc\n", "wide.tsv:1: expected 'term' a tab 'translation'"),
    ("noterm.csv", "x,y\n,orphan\n", "noterm.csv:2"),
])
def test_invalid_glossary_is_an_input_error(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=re.escape(message)):
        load_glossary(path)
    with pytest.raises(InputError, match="cannot read glossary"):
        load_glossary(tmp_path / "missing.tsv")


# --- providers ----------------------------------------------------------------------------

def test_google_is_built_on_deep_translator_without_network():
    from deep_translator import GoogleTranslator

    tr = make_translator("google")
    assert tr.name == "google" and tr.version.startswith("deep-translator-")
    assert isinstance(tr, translate.Translator) and tr.max_chars <= 5000
    client = tr.client("en", "he")
    assert isinstance(client, GoogleTranslator)
    assert (client.source, client.target) == ("en", "iw")  # Google's code for Hebrew
    assert tr.client("en", "zh").target == "zh-CN"
    assert tr.client("pt-br", "es").source == "pt"


def test_keys_come_from_the_environment(monkeypatch):
    from deep_translator import DeeplTranslator

    monkeypatch.delenv("DEEPL_API_KEY", raising=False)
    with pytest.raises(InputError, match="deepl translator needs the DEEPL_API_KEY"):
        make_translator("deepl")
    monkeypatch.setenv("DEEPL_API_KEY", "0000:fx")
    client = make_translator("DeepL").client("en", "de")
    assert isinstance(client, DeeplTranslator) and client.api_key == "0000:fx"
    assert "api-free.deepl.com" in client._base_url  # free-tier key, free endpoint
    with pytest.raises(StageError, match="deepl does not translate Hebrew"):
        make_translator("deepl").client("en", "he")


def test_unknown_provider_is_an_input_error():
    with pytest.raises(InputError, match="unknown translation provider 'bing'.*google"):
        make_translator("bing")


# --- local model --------------------------------------------------------------------------

def test_local_marian_translates_segments_with_glossary(tiny_marian):
    tr = make_translator("local:" + str(tiny_marian))
    assert tr.name == "local:tiny-marian"
    assert "transformers-" in tr.version and "tiny-marian@" in tr.version
    segments = [Segment(0.0, 1.2, "welcome to the Acme Cloud launch"),
                Segment(1.5, 2.0, "the quick brown fox"),
                Segment(2.5, 4.25, "every team can plan work with Acme Cloud today"),
                Segment(5.0, 6.0, "music plays in the background")]
    glossary = {"Acme Cloud": "", "launch": "lanzamiento"}
    out = translate_segments(segments, "en", "es", tr, glossary=glossary)
    assert len(out) == len(segments)
    assert [(s.start, s.end) for s in out] == [(s.start, s.end) for s in segments]
    assert "Acme Cloud" in out[0].text and "lanzamiento" in out[0].text
    assert "Acme Cloud" in out[2].text
    assert out[1].text != segments[1].text and out[3].text != segments[3].text
    assert not any("\u27e6" in s.text for s in out)


@pytest.fixture(scope="module")
def distinct_marian(tmp_path_factory) -> Path:
    """A tiny Marian whose output depends on the words, not only on the length."""
    return build_tiny_marian(tmp_path_factory.mktemp("marian-distinct"), init_std=1.0)


def test_local_batches_keep_line_order(distinct_marian, monkeypatch):
    """Lines are batched by length: each still gets its own translation, also when two lines
    are exactly as long (same characters, same tokens: sorting alone cannot order them)."""
    from polydub.translate import local

    monkeypatch.setattr(local, "BATCH_SIZE", 2)
    tr = make_translator("local:" + str(distinct_marian))
    # two pairs of equal length; each pair fills one batch, so nothing is padded and a line
    # translated alone comes out as it does in its batch
    texts = ["the quick dog", "plan work", "the brown fox", "the music"]
    alone = [tr.translate_batch([text], "en", "es")[0] for text in texts]
    assert alone[0] != alone[2] and alone[1] != alone[3]  # the model tells each pair apart
    assert tr.translate_batch(texts, "en", "es") == alone
    assert tr.translate_batch(texts[::-1], "en", "es") == alone[::-1]


def test_local_model_is_found_in_the_models_dir(tiny_marian, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "opus-mt-en-es").symlink_to(tiny_marian, target_is_directory=True)
    tr = make_translator("local:opus-mt-en-es", models_dir=models)
    assert tr.name == "local:opus-mt-en-es"
    assert len(tr.translate_batch(["the dog"], "en", "es")) == 1
    with pytest.raises(StageError, match="translates en -> es only, not en -> fr"):
        tr.translate_batch(["the dog"], "en", "fr")


@pytest.mark.parametrize("spec", ["local:./no/such/model", "local:/no/such/model", "local:nope"])
def test_missing_local_model_is_an_input_error(spec, tmp_path):
    with pytest.raises(InputError, match="no translation model at"):
        make_translator(spec, models_dir=tmp_path)


def test_nllb_codes_are_real_nllb_language_tokens():
    from transformers.models.nllb import tokenization_nllb

    known = set(tokenization_nllb.FAIRSEQ_LANGUAGE_CODES)
    assert set(NLLB_CODES.values()) <= known
    from polydub.languages import LANGUAGES
    assert set(LANGUAGES) <= set(NLLB_CODES)


# --- approved translations ----------------------------------------------------------------

def test_approved_srt_keeps_its_times_and_text_file_takes_source_times(tmp_path):
    source = [Segment(0.0, 1.0, "hello"), Segment(1.5, 3.0, "goodbye")]
    srt = write_subtitles([Segment(0.1, 0.9, "hola"), Segment(1.4, 2.0, "adiós"),
                           Segment(2.0, 3.2, "amigos")], tmp_path / "ad.es.srt")
    assert [(s.start, s.end, s.text) for s in align_approved(srt, source)] == [
        (0.1, 0.9, "hola"), (1.4, 2.0, "adiós"), (2.0, 3.2, "amigos")]
    txt = tmp_path / "ad.es.txt"
    txt.write_text("hola\n\nadiós\n")
    assert align_approved(txt, source) == [Segment(0.0, 1.0, "hola"), Segment(1.5, 3.0, "adiós")]
    txt.write_text("hola\n")
    with pytest.raises(InputError, match="1 lines for 2 source lines"):
        align_approved(txt, source)


@pytest.mark.parametrize("name, env, cls, target", [
    ("mymemory", {}, "MyMemoryTranslator", "es-ES"),
    ("libre", {"LIBRE_API_KEY": "k", "LIBRE_URL": "http://127.0.0.1:5000/"}, "LibreTranslator", "es"),
    ("yandex", {"YANDEX_API_KEY": "k"}, "YandexTranslator", "es"),
    ("baidu", {"BAIDU_APPID": "a", "BAIDU_APPKEY": "k"}, "BaiduTranslator", "spa"),
])
def test_other_providers_map_our_language_codes(monkeypatch, name, env, cls, target):
    import deep_translator

    for var, value in env.items():
        monkeypatch.setenv(var, value)
    tr = make_translator(name)
    client = tr.client("en", "es")
    assert isinstance(client, getattr(deep_translator, cls)) and client.target == target
    assert set(translate.PROVIDERS[name].required_env.values()) <= set(env)
    for var in translate.PROVIDERS[name].required_env.values():
        with monkeypatch.context() as mp:
            mp.delenv(var)
            with pytest.raises(InputError, match=f"{name} translator needs the {var}"):
                make_translator(name)


def test_translation_memory_sends_only_new_lines(tmp_path):
    from polydub.translate.memory import TranslationMemory, translate_with_memory

    memory = TranslationMemory(tmp_path / "tm" / "recorder-en-es.json")
    script = [Segment(float(i), i + 0.9, text) for i, text in
              enumerate(["Buy now.", "It is fast.", "Buy now.", "Call us today."])]
    tr = RecordingTranslator()
    out, sent = translate_with_memory(script, "en", "es", tr, None, memory)
    assert [s.text for s in out] == ["BUY NOW.", "IT IS FAST.", "BUY NOW.", "CALL US TODAY."]
    assert [s.start for s in out] == [0.0, 1.0, 2.0, 3.0] and sent == 3  # the repeated line once
    # The approved script changes one line: only that line is sent, in a new process too.
    edited = script[:3] + [Segment(3.0, 3.9, "Call us tomorrow.")]
    tr2 = RecordingTranslator()
    out, sent = translate_with_memory(edited, "en", "es", tr2, None, TranslationMemory(memory.path))
    assert sent == 1 and tr2.calls == [["Call us tomorrow."]]
    assert out[3].text == "CALL US TOMORROW." and out[0].text == "BUY NOW."


def test_a_local_translator_folder_without_a_model_is_refused_before_work(tmp_path):
    """`--translator local:/etc`: a folder, but no model: refused in one line by the command,
    before the job starts, not when it first translates."""
    from tests import inprocess
    from tests.conftest import EXAMPLE

    video = tmp_path / EXAMPLE.name  # with its transcript only: Spanish must be translated
    video.write_bytes(EXAMPLE.read_bytes())
    video.with_suffix(".en.srt").write_bytes(EXAMPLE.with_suffix(".en.srt").read_bytes())
    result = inprocess.dub(str(video), "--langs", "es", "--translator", "local:/etc",
                           "--out", str(tmp_path / "out"), "--db", f"sqlite:///{tmp_path / 'c.db'}",
                           env={"PREFECT_API_URL": "http://127.0.0.1:9/api"})  # were it not refused: no server
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("dub: error: no translation model in /etc (a folder without config.json); "
                                     "give a model folder such as the one `dub models pull` or save_pretrained writes")
    assert not (tmp_path / "out").exists()
