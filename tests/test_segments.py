"""Subtitle files and language codes as users hand them to us."""

from __future__ import annotations

import pytest

from polydub import languages
from polydub.errors import InputError
from polydub.segments import (
    Segment,
    label_from,
    parse_subtitles,
    read_subtitles,
    speakers_of,
    to_srt,
    to_vtt,
    write_subtitles,
)


def test_srt_and_vtt_as_players_write_them(tmp_path):
    vtt = ("\ufeffWEBVTT\nKind: captions\n\nNOTE a comment\n\n1\n00:01.500 --> 00:03.250 align:start\n"
           "<v Anna>Hello <b>there</b></v>\n\n01:00:00.000 --> 01:00:02.000\nAn hour in\n")
    assert parse_subtitles(vtt) == [Segment(1.5, 3.25, "Hello there", "Anna"), Segment(3600.0, 3602.0, "An hour in")]
    srt = "2\r\n00:00:05,000 --> 00:00:06,000\r\nSecond\r\n\r\n1\r\n00:00:01,000 --> 00:00:02,500\r\nFirst\r\nline\r\n"
    assert parse_subtitles(srt) == [Segment(1.0, 2.5, "First line"), Segment(5.0, 6.0, "Second")]


def test_round_trip_keeps_times_to_the_millisecond(tmp_path):
    segments = [Segment(0.5, 2.8, "Hola, y bienvenidos."), Segment(3661.001, 3662.999, "¿Qué tal?")]
    for name in ("a.srt", "a.vtt"):
        assert read_subtitles(write_subtitles(segments, tmp_path / name)) == segments
    assert to_srt(segments).startswith("1\n00:00:00,500 --> 00:00:02,800\n")
    assert to_vtt(segments).startswith("WEBVTT\n\n00:00:00.500 --> 00:00:02.800\n")


def test_vtt_voice_spans_name_the_speaker_and_leave_the_text():
    vtt = ("WEBVTT\n\n00:00.000 --> 00:01.000\n<v Ana>Hola, Ben.</v>\n\n"
           "00:01.000 --> 00:02.000\n<v.loud Ben Ortiz>¿Qué <i>tal</i>?\n\n"
           "00:02.000 --> 00:03.000\nNadie: sin voz\n")
    assert parse_subtitles(vtt) == [Segment(0.0, 1.0, "Hola, Ben.", "Ana"),
                                    Segment(1.0, 2.0, "¿Qué tal?", "Ben Ortiz"),
                                    Segment(2.0, 3.0, "Nadie: sin voz")]  # one colon line is text


def _srt(*lines: str) -> str:
    return "\n".join(f"{i}\n00:00:{i:02d},000 --> 00:00:{i:02d},900\n{ln}\n" for i, ln in enumerate(lines, 1))


def test_srt_names_before_a_colon_or_in_brackets_are_speakers():
    got = parse_subtitles(_srt("ANA: Hello, Ben.", "Ben: Hi!\nHow are you?", "[Dr. Lee] Stop.",
                               "<i>Speaker 2:</i> Me too.", "Still Ana, unlabeled.", "[laughs] That's odd."))
    assert [(s.speaker, s.text) for s in got] == [
        ("ANA", "Hello, Ben."), ("Ben", "Hi! How are you?"), ("Dr. Lee", "Stop."), ("Speaker 2", "Me too."),
        (None, "Still Ana, unlabeled."), (None, "[laughs] That's odd.")]  # lower-case brackets: a sound


def test_colons_in_ordinary_text_are_not_speakers():
    # one "Note:" among unlabeled lines is text; so are lower-case words, long phrases and times
    for lines in (("Note: prices include tax.", "Buy now.", "Thanks."),
                  ("note: this", "warning: that"),
                  ("The one thing you need to know: nothing.", "Call Us Today Please: now."),
                  ("10:30 is late.", "At 11:00: lunch.")):
        assert speakers_of(parse_subtitles(_srt(*lines))) == [], lines
    # brackets with a capitalized name count on their own
    assert speakers_of(parse_subtitles(_srt("[Ana] Hi.", "Plain line."))) == ["Ana"]


def test_speakers_survive_writing_and_reading_both_formats(tmp_path):
    segments = [Segment(0.5, 2.0, "Hola.", "Ana"), Segment(2.5, 4.0, "Adiós: hasta luego.", "Ben Ortiz"),
                Segment(4.5, 5.0, "Sí.", "Ana")]
    for name in ("s.srt", "s.vtt"):
        assert read_subtitles(write_subtitles(segments, tmp_path / name)) == segments
    assert "\nBen Ortiz: Adiós: hasta luego.\n" in to_srt(segments)
    assert "\n<v Ben Ortiz>Adiós: hasta luego.</v>\n" in to_vtt(segments)
    assert speakers_of(segments) == ["Ana", "Ben Ortiz"]


def test_translated_lines_take_the_speaker_they_overlap_most_their_own_label_wins():
    source = [Segment(0.0, 2.0, "Hi.", "Ana"), Segment(2.0, 4.0, "Hey.", "Ben"), Segment(4.0, 6.0, "Bye.", "Ana")]
    translated = [Segment(0.1, 2.5, "Hola."), Segment(2.4, 4.1, "Ey.", "Carla"), Segment(4.5, 5.0, "Adiós."),
                  Segment(9.0, 9.5, "¿Y?")]  # the last overlaps nothing: the nearest line's speaker
    assert [s.speaker for s in label_from(translated, source)] == ["Ana", "Carla", "Ana", "Ana"]
    assert label_from(translated, [Segment(0.0, 9.0, "unlabeled")]) == translated


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
