"""Subtitle files and language codes as users hand them to us."""

from __future__ import annotations

import pytest

from polydub import languages
from polydub.errors import InputError
from polydub.segments import (
    Segment,
    parse_subtitles,
    read_subtitles,
    to_srt,
    to_vtt,
    write_subtitles,
)


def test_srt_and_vtt_as_players_write_them(tmp_path):
    vtt = ("\ufeffWEBVTT\nKind: captions\n\nNOTE a comment\n\n1\n00:01.500 --> 00:03.250 align:start\n"
           "<v Anna>Hello <b>there</b></v>\n\n01:00:00.000 --> 01:00:02.000\nAn hour in\n")
    assert parse_subtitles(vtt) == [Segment(1.5, 3.25, "Hello there"), Segment(3600.0, 3602.0, "An hour in")]
    srt = "2\r\n00:00:05,000 --> 00:00:06,000\r\nSecond\r\n\r\n1\r\n00:00:01,000 --> 00:00:02,500\r\nFirst\r\nline\r\n"
    assert parse_subtitles(srt) == [Segment(1.0, 2.5, "First line"), Segment(5.0, 6.0, "Second")]


def test_round_trip_keeps_times_to_the_millisecond(tmp_path):
    segments = [Segment(0.5, 2.8, "Hola, y bienvenidos."), Segment(3661.001, 3662.999, "¿Qué tal?")]
    for name in ("a.srt", "a.vtt"):
        assert read_subtitles(write_subtitles(segments, tmp_path / name)) == segments
    assert to_srt(segments).startswith("1\n00:00:00,500 --> 00:00:02,800\n")
    assert to_vtt(segments).startswith("WEBVTT\n\n00:00:00.500 --> 00:00:02.800\n")


def test_malformed_subtitles_name_the_file(tmp_path):
    bad = tmp_path / "bad.srt"
    bad.write_text("1\n00:00:02,000 --> 00:00:01,000\nEnds before it starts\n")
    with pytest.raises(InputError, match="bad.srt: not a readable SRT/VTT"):
        read_subtitles(bad)


def test_language_codes():
    assert languages.parse_langs("es, FR,pt_BR,es") == ["es", "fr", "pt-br"]
    assert languages.iso639_2("de") == "deu" and languages.iso639_2("de", bibliographic=True) == "ger"
    assert languages.iso639_2("pt-br") == "por" and languages.espeak_voice("zh") == "cmn"
    for bad in ("xx", "english", "e"):
        with pytest.raises(InputError, match="unknown language code"):
            languages.normalize(bad)
