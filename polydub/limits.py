"""Bounds on what a job may ask for, checked before any work starts.

A subtitle line is spoken by a voice and mixed into a track as long as the source, so an
unbounded line (or thousands of them) means hours of audio and gigabytes of memory. Every
bound is named here once (`segments.check_cues` applies the cue bounds); `check_glossary`
raises `InputError` naming the file.

Every file a user gives is read through `read_bounded`: a regular file (after symlinks),
never more bytes than its bound whatever `stat` says (/dev/zero has size 0), and a FIFO
cannot block the open. YAML goes through `load_yaml`, which refuses documents whose
aliases expand past a bound before anything is built from them; `shown` quotes a value
in a message at a bounded length.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from polydub.errors import InputError

MAX_SUBTITLE_BYTES = 10 * 1024 * 1024  # a 3-hour film's SRT is ~200 KB
MAX_CUES = 20_000  # a 3-hour film has 2,000-3,000 cues
MAX_CUE_CHARS = 2_000  # a long paragraph; one cue is spoken as one clip
MAX_CHARS_PER_SECOND = 50.0  # fast speech is ~20; beyond this no voice can say it in time
CPS_SLACK_CHARS = 20  # short cues ("OK!") may be denser than the rate says
TRANSLATION_GROWTH = 4  # a translated line may be this many times its source line (plus a cue)
MAX_GLOSSARY_TERMS = 10_000
MAX_TERM_CHARS = 200
MAX_GLOSSARY_FILE_BYTES = 4 * 1024 * 1024  # 10,000 terms of 200 characters each way
MAX_TM_FILE_BYTES = 64 * 1024 * 1024  # a translation memory file (CSV or TMX) to import
MAX_TM_ENTRIES = 100_000  # lines per import; a brand's whole ad catalog has far fewer
MAX_XML_DEPTH = 32  # element nesting in a TMX file (tmx/body/tu/tuv/seg and inline markup)
MAX_XML_ELEMENTS = 1_000_000  # in a TMX file: 7 per entry (tu, 2 prop, 2 tuv, 2 seg) of MAX_TM_ENTRIES, and markup
MAX_YAML_NODES = 1_000_000  # values in a YAML file, aliases expanded: 10,000 items of ~30 fields each
MAX_YAML_CHARS = 64 * 1024 * 1024  # characters of its scalars, aliases expanded
MAX_SHOWN_CHARS = 80  # of a value quoted in a message
READ_CHUNK = 1 << 20  # bytes per read of a user's file
FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
              (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_glossary(path: str | Path, glossary: dict[str, str]) -> None:
    """Refuse glossaries too large to apply to every line, or with over-long terms."""
    if len(glossary) > MAX_GLOSSARY_TERMS:
        raise InputError(f"{path}: {len(glossary)} terms; at most {MAX_GLOSSARY_TERMS} are accepted")
    for term, translation in glossary.items():
        if len(term) > MAX_TERM_CHARS or len(translation) > MAX_TERM_CHARS:
            raise InputError(f"{path}: term {term[:40]!r}... is longer than {MAX_TERM_CHARS} characters")


def _not_regular(name: object, mode: int, what: str) -> InputError:
    kind = next((label for test, label in FILE_KINDS if test(mode)), "not a plain file")
    return InputError(f"{name}: not a regular file ({kind}); a {what} must be a regular file")


def refuse_special(path: str | Path, what: str, name: object = None) -> None:
    """`InputError` if `path` (symlinks followed) exists but is neither a regular file nor a
    folder: a FIFO, device or socket, named `name` (else its path)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing or unreadable: the caller's own message says so
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise _not_regular(path if name is None else name, mode, what)


def read_bounded(path: str | Path, limit: int, what: str, name: object = None) -> bytes:
    """The bytes of `path`, a `what` file: refused (`InputError`, one line naming it as
    `name`, else its path) unless it is a regular file once symlinks are followed, or when
    it holds more than `limit` bytes, counted as read (a device's size says nothing)."""
    path = Path(path)
    name = path if name is None else name
    try:
        mode = os.stat(path).st_mode  # refuse a device before opening it: opening one may act
        if not stat.S_ISREG(mode):
            raise _not_regular(name, mode, what)
        # O_NONBLOCK: a FIFO swapped in since the stat cannot block the open (fstat refuses it)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(f"{name}: cannot read {what} ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(name, mode, what)
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(READ_CHUNK, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise InputError(f"{name}: cannot read {what} ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if total > limit:
        raise InputError(f"{name}: a {what} may be at most {limit / (1 << 20):g} MB; this one is larger")
    return b"".join(chunks)


def shown(value: object, limit: int = MAX_SHOWN_CHARS, depth: int = 3) -> str:
    """`repr(value)` for a message, at most about `limit` characters and `depth` levels of
    lists, built without rendering the whole value (a YAML alias can make a list of millions)."""
    if isinstance(value, str):
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    if isinstance(value, (list, tuple, dict)):
        brackets = "{}" if isinstance(value, dict) else "[]" if isinstance(value, list) else "()"
        if depth <= 0:
            return brackets[0] + "..." + brackets[1]
        parts, used = [], 0
        items = ((f"{shown(k, limit, depth - 1)}: {shown(v, limit, depth - 1)}" for k, v in value.items())
                 if isinstance(value, dict) else (shown(v, limit, depth - 1) for v in value))
        for part in items:
            if used + len(part) > limit:
                parts.append("...")
                break
            parts.append(part)
            used += len(part) + 2
        return brackets[0] + ", ".join(parts) + brackets[1]
    text = repr(value)
    return text[:limit] + ("..." if len(text) > limit else "")


def load_yaml(text: str, where: str) -> object:
    """A YAML document's value (safe types only). The node graph is composed first (aliases
    are shared nodes, so this costs what the text does) and counted with its aliases
    expanded: over MAX_YAML_NODES values or MAX_YAML_CHARS characters it is refused
    (`InputError` naming `where`) before any value is built, so nine nested aliases of
    nine ("billion laughs") cost milliseconds. YAML errors pass through to the caller."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, where)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expansion(root, where: str) -> None:
    """Count a composed YAML graph's nodes and scalar characters, following aliases (a
    node reached twice counts twice, as constructing and checking would visit it twice)."""
    nodes, chars, stack = 0, 0, [root]
    while stack:
        node = stack.pop()
        nodes += 1
        if isinstance(node.value, str):
            chars += len(node.value)
        elif isinstance(node.value, list):
            for child in node.value:
                stack.extend(child if isinstance(child, tuple) else (child,))  # a mapping's (key, value)
        if nodes > MAX_YAML_NODES or chars > MAX_YAML_CHARS:
            raise InputError(f"{where}: its aliases expand to more than {MAX_YAML_NODES:,} values or "
                             f"{MAX_YAML_CHARS // (1 << 20)} MB of text; refused")
