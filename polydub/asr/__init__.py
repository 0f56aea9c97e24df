"""Speech recognition: timed source lines, their words and the spoken language.

Whisper runs on faster-whisper (CTranslate2; the default when installed) or on
openai-whisper; Silero VAD trims each line to where its speech starts and ends.
Importing this package is cheap: the backends load on first use.
"""

from polydub.asr.audio import ASR_SAMPLE_RATE, load_audio
from polydub.asr.locate import DEFAULT_MODEL, FASTER_WHISPER, OPENAI_WHISPER, AsrModel, locate_model
from polydub.asr.result import Line, Transcript, Word
from polydub.asr.transcribe import load, transcribe
from polydub.asr.vad import VadSettings, speech_regions, split_at_pauses, trim_to_speech

__all__ = ["ASR_SAMPLE_RATE", "DEFAULT_MODEL", "FASTER_WHISPER", "OPENAI_WHISPER", "AsrModel", "Line",
           "Transcript", "VadSettings", "Word", "load", "load_audio", "locate_model", "speech_regions",
           "split_at_pauses", "transcribe", "trim_to_speech"]
