"""A catalog's manifest: the ad variants to dub, each with its languages and options.

A manifest is a CSV file (a header row, one item per row), a JSON or YAML file (a list of
items, or `{"defaults": {...}, "items": [...]}`), or a folder (a watch folder: each video
or audio file directly in it is an item, its id the file's stem). Columns are `id`,
`input`, `langs` and any `DubOptions` field but `out` (the catalog gives each item its own
folder). A field's value comes from the item, else the manifest's defaults, else the
command line, else `DubOptions`' default. Paths are relative to the manifest's folder.

`load_manifest` reads and type-checks every row cheaply (it is also what `dub status`
reads); `plan_items` makes the deep checks (probing, sidecars, backends). Both report
every problem at once, one line each, before any work.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from polydub import languages, limits
from polydub.batch import download
from polydub.errors import InputError
from polydub.job import JobPlan, check_backends, plan_job
from polydub.options import FLAGS, TEXT_MAX, DubOptions, make_options
from polydub.redact import redact
from polydub.storage import objects

MAX_MANIFEST_BYTES = 20 * 1024 * 1024  # 10,000 rows of long paths are ~5 MB
MAX_ITEMS = 10_000  # a large ad catalog: 500 variants x 20 markets
MAX_CELL_CHARS = TEXT_MAX  # any one value, as for an option
MAX_PROBLEM_CHARS = 2 * TEXT_MAX  # a problem quotes at most about one cell
PLAN_WORKERS = 4  # items probed at once by plan_items (ffprobe and ffmpeg run in parallel)
DOWNLOAD_WORKERS = 4  # URLs downloaded at once by load_manifest
SUFFIXES = (".csv", ".json", ".yaml", ".yml")
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
ID_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 100 characters"
MEDIA_SUFFIXES = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mxf", ".mpg", ".mpeg", ".ts", ".m2ts", ".wmv",
    ".flv", ".3gp", ".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".oga", ".opus", ".wma", ".aif",
    ".aiff", ".mka",
})  # a watch folder's items; other files (subtitles, notes) are not
PATH_FIELDS = ("transcript", "translations", "glossary", "voices")
OPTION_FIELDS = tuple(name for name in DubOptions.model_fields if name != "out")
FIELDS = ("id", "input", "langs", *OPTION_FIELDS)
NOT_PER_ITEM = {"out": "the catalog gives each item its own folder"}


class ManifestError(InputError):
    """A manifest with problems: `problems` holds each one's line, `str()` the count and the
    first (one line)."""

    def __init__(self, manifest: str, problems: list[str]):
        self.manifest = str(manifest)
        # one line each, whatever a file name or cell holds; no secret from a URL
        self.problems = [redact(_one_line(p)) for p in problems]
        n = len(self.problems)
        super().__init__(f"{self.manifest}: {n} problem{'' if n == 1 else 's'}: {self.problems[0]}")

    def __reduce__(self):
        return type(self), (self.manifest, self.problems)


def _one_line(problem: str) -> str:
    """Whatever a file name or cell holds: one line, of a readable length."""
    problem = problem.replace("\r", "\\r").replace("\n", "\\n")
    return problem if len(problem) <= MAX_PROBLEM_CHARS else problem[:MAX_PROBLEM_CHARS] + "..."


@dataclass
class ManifestItem:
    id: str
    where: str  # "ads.csv row 4" / "ads.yaml item 3 (id spot-b)": how errors name it
    input: str  # absolute local path (a URL's download in the cache)
    url: str | None  # the URL it was downloaded from, if any
    langs: list[str]  # normalized codes
    options: DubOptions  # merged (item > defaults > command line); paths absolute


@dataclass
class Manifest:
    path: str  # resolved path of the file or folder
    key: str  # the catalog's key for it: the resolved path
    name: str  # the file's stem or the folder's name
    items: list[ManifestItem]

    def item(self, item_id: str) -> ManifestItem:
        return self._by_id[item_id]

    @cached_property
    def _by_id(self) -> dict[str, ManifestItem]:
        return {item.id: item for item in self.items}


@dataclass
class _Row:
    """One item as written: field -> value (None: not set)."""

    where: str  # how its problems begin
    label: str  # how another row names it ("row 4")
    values: dict[str, object] | None  # None: not an item at all (its problem says why)
    cell: str | None = "column"  # what a field is called in this format (None: no fields)
    problems: list[str] = dataclasses.field(default_factory=list)  # found while reading it


def _field(name: object) -> str:
    """A column or key as written -> the field it names: case-insensitive, `-` as `_`."""
    return str(name).strip().lower().replace("-", "_")


def _unset(value: object) -> object:
    """Empty cells and blank strings are not set; text is stripped."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


# ---------------------------------------------------------------------------- reading


def _read_text(path: Path, name: str) -> str:
    try:
        data = limits.read_bounded(path, MAX_MANIFEST_BYTES, "manifest", name)
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(name, [f"{name}: not UTF-8 text (byte {exc.start})"]) from None
    except InputError as exc:  # not a regular file, too large, unreadable
        raise ManifestError(name, [str(exc)]) from None


def _csv_rows(text: str, name: str, problems: list[str]) -> list[_Row]:
    """Rows of a CSV file with a header row; the delimiter (`,`, `;` or tab) is the
    header's (spreadsheets in some locales export `;`)."""
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise ManifestError(name, [f"{name}: no header row (id, input, langs, ...)"])
        columns: list[str | None] = []  # per position: the field, or None (ignored)
        seen: dict[str, str] = {}
        for written in header:
            known = _field(written)
            where = f"{name} row 1, column {written.strip()}"
            if not known:
                columns.append(None)
            elif known in NOT_PER_ITEM:
                problems.append(f"{where}: not allowed per item ({NOT_PER_ITEM[known]})")
                columns.append(None)
            elif known not in FIELDS:
                problems.append(f"{where}: unknown column (known: {', '.join(FIELDS)})")
                columns.append(None)
            elif known in seen:
                problems.append(f"{where}: the same column as {seen[known]}")
                columns.append(None)
            else:
                seen[known] = written.strip()
                columns.append(known)
        missing = [f for f in ("id", "input") if f not in seen]
        if missing:
            raise ManifestError(name, problems + [f"{name}: no {' or '.join(missing)} column in the header row "
                                                  f"({', '.join(h.strip() for h in header)})"])
        rows = []
        for number, cells in enumerate(reader, 2):  # spreadsheet rows: the header is row 1
            if not any(c.strip() for c in cells):
                continue  # a blank line
            if len(rows) == MAX_ITEMS:
                raise ManifestError(name, [f"{name}: more than {MAX_ITEMS} items; split the manifest"])
            row = _Row(f"{name} row {number}", f"row {number}", {})
            for position, cell in enumerate(cells):
                column = columns[position] if position < len(columns) else None
                if column:
                    row.values[column] = cell
                elif not cell.strip():
                    continue
                elif position >= len(columns):
                    row.problems.append(f"{row.where}: {len(cells)} cells but the header has {len(columns)} columns")
                    break
                elif not header[position].strip():
                    row.problems.append(f"{row.where}: a value in column {position + 1}, which has no name "
                                        "in the header")
            rows.append(row)
        return rows
    except csv.Error as exc:
        raise ManifestError(name, [f"{name}: not valid CSV (line {reader.line_num}: {exc})"]) from None


def _document(text: str, suffix: str, name: str) -> object:
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(name, [f"{name}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                                       f"{exc.msg})"]) from None
        except (ValueError, RecursionError) as exc:
            raise ManifestError(name, [f"{name}: not valid JSON ({exc})"]) from None
    import yaml

    try:
        return limits.load_yaml(text, name)  # an alias bomb is refused before it is built
    except InputError as exc:
        raise ManifestError(name, [str(exc)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ManifestError(name, [f"{name}: not valid YAML ({where}{exc.problem})"]) from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise ManifestError(name, [f"{name}: not valid YAML ({exc})"]) from None


def _keys(data: dict, where: str, problems: list[str], allowed: tuple[str, ...]) -> dict[str, object]:
    """An item's or the defaults' fields, each checked to be one we know."""
    values: dict[str, object] = {}
    for written, value in data.items():
        known = _field(written)
        if known in NOT_PER_ITEM:
            problems.append(f"{where}, field {written}: not allowed per item ({NOT_PER_ITEM[known]})")
        elif known not in allowed:
            what = "unknown field" if known not in FIELDS else "not allowed in defaults"
            problems.append(f"{where}, field {written}: {what} (known: {', '.join(allowed)})")
        elif known in values:
            problems.append(f"{where}, field {written}: given twice")
        else:
            values[known] = value
    return values


def _document_rows(data: object, name: str, problems: list[str]) -> tuple[list[_Row], dict[str, object]]:
    """Rows and defaults of a JSON or YAML manifest."""
    defaults: dict[str, object] = {}
    if isinstance(data, dict):
        for key in data:
            if key not in ("defaults", "items"):
                problems.append(f"{name}: unknown key {limits.shown(key)} (a manifest has defaults and items)")
        raw_defaults = data.get("defaults")
        if isinstance(raw_defaults, dict):
            defaults = _keys(raw_defaults, f"{name} defaults", problems, ("langs", *OPTION_FIELDS))
        elif raw_defaults is not None:
            problems.append(f"{name} defaults: expected fields (langs, options), not {type(raw_defaults).__name__}")
        data = data.get("items")
    if data is None:
        raise ManifestError(name, problems + [f"{name}: no items"])
    if not isinstance(data, list):
        raise ManifestError(name, problems + [f"{name}: expected a list of items, or an object with "
                                              f"defaults and items"])
    if len(data) > MAX_ITEMS:
        raise ManifestError(name, [f"{name}: {len(data)} items; at most {MAX_ITEMS} are accepted; split the manifest"])
    rows = []
    for number, item in enumerate(data, 1):
        raw_id = item.get("id") if isinstance(item, dict) else None
        shown = f" (id {raw_id})" if isinstance(raw_id, (str, int)) and ID_PATTERN.match(str(raw_id)) else ""
        row = _Row(f"{name} item {number}{shown}", f"item {number}", None, cell="field")
        if isinstance(item, dict):
            row.values = _keys(item, row.where, row.problems, FIELDS)
        else:
            row.problems.append(f"{row.where}: expected fields (id, input, langs, ...), not {type(item).__name__}")
        rows.append(row)
    return rows, defaults


def _folder_rows(folder: Path, name: str) -> list[_Row]:
    """A watch folder's media files (not its subfolders, hidden or partial files)."""
    rows = []
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise ManifestError(name, [f"{name}: cannot read the folder ({exc.strerror or exc})"]) from None
    for path in entries:
        if path.name.startswith(".") or path.suffix.lower() not in MEDIA_SUFFIXES or not path.is_file():
            continue
        if len(rows) == MAX_ITEMS:
            raise ManifestError(name, [f"{name}: more than {MAX_ITEMS} media files; split the folder"])
        where = f"{name}/{path.name}"
        rows.append(_Row(where, path.name, {"id": path.stem, "input": path.name}, cell=None))
    return rows


# --------------------------------------------------------------------------- checking


def _langs(value: object) -> list[str]:
    """`es,fr` or a list of codes -> normalized codes; `InputError` naming a bad one."""
    if isinstance(value, str):
        return list(_parsed_langs(value))
    if isinstance(value, list) and value:
        codes = []
        for code in value:
            if isinstance(code, bool):  # YAML reads an unquoted no (Norwegian) as false
                raise InputError(f"{code!r} is not a language code (quote it: 'no', not no)")
            if not isinstance(code, str):
                raise InputError(f"{limits.shown(code)} is not a language code (use ISO 639-1, e.g. es, fr, de, pt-br)")
            codes.append(languages.normalize(code))
        return list(dict.fromkeys(codes))
    raise InputError("expected language codes, e.g. es,fr or a list")


@lru_cache(maxsize=1024)
def _parsed_langs(text: str) -> tuple[str, ...]:
    """A catalog's rows name the same few language lists: each parsed once."""
    return tuple(languages.parse_langs(text))


def _option(field: str, value: object) -> None:
    """Check one option's value; the message without the command line's flag name."""
    try:
        make_options({field: value})
    except InputError as exc:
        message, flag = str(exc), FLAGS[field]
        raise InputError(message[len(flag):].lstrip(": ") if message.startswith(flag) else message) from None
    if field == "source_lang":
        languages.normalize(value)  # plan_job would say it later, without the column


def _absolute(value: str, base: Path) -> str:
    """The resolved absolute path (an object store URL as it is). Folders are resolved once
    each (a catalog of 10,000 rows in one folder would otherwise pay a stat per folder level
    per row)."""
    if objects.is_remote(value):
        return value
    path = os.path.join(base, os.path.expanduser(value))
    folder, name = os.path.split(path)
    if name in ("", ".", ".."):
        return os.path.realpath(path)
    real = os.path.join(_real_folder(folder), name)
    return os.path.realpath(real) if os.path.islink(real) else real


@lru_cache(maxsize=4096)
def _real_folder(folder: str) -> str:
    return os.path.realpath(folder)


def _bad_text(value: object) -> str | None:
    """What is wrong with a value's text as text (a list's items too; not deeper: YAML may
    nest a list in itself)."""
    for text in value if isinstance(value, list) else [value]:
        if isinstance(text, str) and len(text) > MAX_CELL_CHARS:
            return f"longer than {MAX_CELL_CHARS} characters"
        if isinstance(text, str) and "\0" in text:
            return "contains a NUL character"
    return None


def _local_file(value: str, base: Path) -> tuple[str, str | None]:
    """(absolute path, what is wrong with it as an input file, or None)."""
    path = _absolute(value, base)
    try:
        mode = os.stat(path).st_mode  # one stat: a catalog has thousands of rows
    except FileNotFoundError:
        return path, f"{path}: no such file"
    except OSError as exc:  # a name too long, a loop of links
        return path, f"{path}: {exc.strerror or exc}"
    if stat.S_ISDIR(mode):
        return path, f"{path}: is a folder, not a media file"
    if not stat.S_ISREG(mode):  # a FIFO or device: probing it would wait or read without end
        return path, f"{path}: not a regular file; an input must be a media file"
    return path, None


class _Checker:
    """The rules every row is held to, with what the defaults and the command line give."""

    def __init__(self, name: str, base: Path, problems: list[str], langs, options):
        self.name, self.base, self.problems = name, base, problems
        self.cli_langs = None if langs is None else _langs(langs)  # bad usage: InputError as it is
        cli = make_options(options).model_dump(exclude_unset=True)
        cli.pop("out", None)  # the catalog decides each item's folder
        for field in PATH_FIELDS:
            if cli.get(field):
                cli[field] = _absolute(cli[field], Path.cwd())
        self.cli = cli
        self.defaults: dict[str, object] = {}
        self.default_langs: list[str] | None = None
        self.bad_default_langs = False
        self.ids: dict[str, str] = {}  # id (case-folded: a folder each, on any file system) -> label

    def set_defaults(self, raw: dict[str, object]) -> None:
        where = f"{self.name} defaults"
        for field, value in raw.items():
            value = _unset(value)
            if value is None:
                continue
            if _bad_text(value):
                self.problems.append(f"{where}, field {field}: {_bad_text(value)}")
                self.bad_default_langs |= field == "langs"
                continue
            try:
                if field == "langs":
                    self.default_langs = _langs(value)
                    continue
                _option(field, value)
            except InputError as exc:
                self.bad_default_langs |= field == "langs"
                self.problems.append(f"{where}, field {field}: {exc}")
                continue
            self.defaults[field] = _absolute(value, self.base) if field in PATH_FIELDS else value

    def item(self, row: _Row) -> tuple[ManifestItem | None, str | None, list[str]]:
        """(item, URL to download, problems) of one row; the item is None where it has problems."""
        problems = list(row.problems)
        if row.values is None:
            return None, None, problems

        def problem(field: str | None, message: object) -> None:
            if not field:
                problems.append(f"{row.where}: {message}")
            elif row.cell:
                problems.append(f"{row.where}, {row.cell} {field}: {message}")
            else:  # a watch folder's file: its id and input are its name
                problems.append(f"{row.where}: {field} {message}")

        values, bad = {}, set()  # bad: said already; not also "missing"
        for field, value in row.values.items():
            value = _unset(value)
            if _bad_text(value):
                problem(field, _bad_text(value))
                bad.add(field)
            elif value is not None:
                values[field] = value

        item_id = values.get("id")
        if isinstance(item_id, int) and not isinstance(item_id, bool):
            item_id = str(item_id)  # YAML: id: 1234
        if item_id is None:
            if "id" not in bad:
                problem("id", "no id")
        elif not isinstance(item_id, str):
            problem("id", f"{limits.shown(item_id)} is not text")
            item_id = None
        elif not ID_PATTERN.match(item_id):
            problem("id", f"{limits.shown(item_id)} cannot name a folder ({ID_RULE})")
            item_id = None
        elif item_id.casefold() in self.ids:
            problem("id", f"{item_id!r} is also the id of {self.ids[item_id.casefold()]}")
            item_id = None
        else:
            self.ids[item_id.casefold()] = row.label

        source, url = values.get("input"), None
        if source is None:
            if "input" not in bad:
                problem("input", "no input")
        elif not isinstance(source, str):
            problem("input", f"{limits.shown(source)} is not a file name or URL")
            source = None
        elif objects.is_remote(source):  # an object store's: fetched below with its sidecars, as a URL is
            try:
                url = objects.check_url(source, "input")
            except InputError as exc:
                problem("input", exc)
            source = None
        elif download.is_url(source):
            try:
                download.check_url(source)
                url = source
            except InputError as exc:
                problem("input", exc)
            source = None
        else:
            source, wrong = _local_file(source, self.base)
            if wrong:
                problem("input", wrong)

        langs = None
        if "langs" in values:
            try:
                langs = _langs(values["langs"])
            except InputError as exc:
                problem("langs", exc)
        elif self.default_langs or self.cli_langs:
            langs = self.default_langs or self.cli_langs
        elif not self.bad_default_langs and "langs" not in bad:  # (the defaults': reported once)
            problem("langs", "no languages (give them here, in the defaults, or with --langs)")

        merged = {**self.cli, **self.defaults}
        given = [field for field in OPTION_FIELDS if field in values]
        for field in given:
            value = values[field]
            merged[field] = _absolute(value, self.base) if field in PATH_FIELDS and isinstance(value, str) else value
        options = None
        try:
            options = make_options(merged)
            if "source_lang" in given:
                _option("source_lang", values["source_lang"])
        except InputError as exc:  # name the column: check the row's own fields one by one
            for field in given:
                try:
                    _option(field, values[field])
                except InputError as field_exc:
                    problem(field, field_exc)
            if not problems:
                problem(None, exc)

        if problems or langs is None:  # no langs and no problem: the defaults' problem says why
            return None, url, problems
        return ManifestItem(item_id, row.where, source or "", url, list(langs), options), url, []


def load_manifest(path: str | Path, langs: str | list[str] | None = None,
                  options: DubOptions | dict | None = None) -> Manifest:
    """Read and type-check every row (no media probing): ManifestError with every problem.

    `langs` and `options` are the command line's: used where neither the item nor the
    manifest's defaults say. URL inputs are downloaded into the cache now (once: a URL
    already downloaded is found without the network)."""
    _real_folder.cache_clear()  # folders (and their links) as they are now
    given = Path(path).expanduser()
    shown = str(path)
    try:
        if not given.exists():
            raise ManifestError(shown, [f"{shown}: no such file or folder"])
    except OSError as exc:  # a name too long, a loop of links
        raise ManifestError(shown, [f"{shown}: {exc.strerror or exc}"]) from None
    resolved = given.resolve()
    name = given.name if given.name not in ("", "..") else resolved.name  # as the user knows it
    problems: list[str] = []
    defaults: dict[str, object] = {}
    try:
        limits.refuse_special(resolved, "manifest", shown)  # a FIFO or /dev/zero behind a link
    except InputError as exc:
        raise ManifestError(shown, [str(exc)]) from None
    suffix = resolved.suffix.lower()
    if not resolved.is_dir() and suffix not in SUFFIXES:
        raise ManifestError(shown, [f"{shown}: not a manifest (a .csv, .json, .yaml or .yml file, or a folder)"])
    try:
        if resolved.is_dir():
            rows, base = _folder_rows(resolved, name), resolved
        else:
            text, base = _read_text(resolved, name), resolved.parent
            if suffix == ".csv":
                rows = _csv_rows(text, name, problems)
            else:
                rows, defaults = _document_rows(_document(text, suffix, name), name, problems)
    except ManifestError as exc:  # the readers name the file; the error, the path as given
        raise ManifestError(shown, exc.problems) from None
    if not rows:
        raise ManifestError(shown, problems + [f"{name}: no items"])

    checker = _Checker(name, base, problems, langs, options)
    if resolved.is_dir() and checker.cli_langs is None:
        raise ManifestError(shown, [f"{name}: no languages: a watch folder's items take --langs"])
    checker.set_defaults(defaults)
    checked = [checker.item(row) for row in rows]

    # URL inputs: those in the index without the network, the rest downloaded (a few at once)
    index = download.read_index()
    urls = list(dict.fromkeys(url for _, url, _ in checked if url))
    fetched: dict[str, Path | InputError] = {url: hit for url in urls if (hit := download.cached(url, index))}
    missing = [url for url in urls if url not in fetched]

    def get(url: str) -> Path | InputError:
        try:
            if objects.is_remote(url):
                from polydub.storage.inputs import fetch_input

                return fetch_input(url, what="")  # the row's problem names the column
            return download.fetch(url)
        except InputError as exc:
            return exc

    with ThreadPoolExecutor(DOWNLOAD_WORKERS) as pool:
        fetched.update(zip(missing, pool.map(get, missing)))

    items = []
    for row, (item, url, row_problems) in zip(rows, checked):
        got = fetched.get(url) if url else None
        if isinstance(got, InputError):
            row_problems.append(f"{row.where}, {row.cell} input: {got}")
            item = None
        problems.extend(row_problems)
        if item and not row_problems:
            if url:
                item.input = str(got)
            items.append(item)
    if problems:
        raise ManifestError(shown, problems)
    return Manifest(path=str(resolved), key=str(resolved), name=Path(name).stem if resolved.is_file() else name,
                    items=items)


def plan_items(manifest: Manifest, out_root: str | Path, outputs_root: str | Path | None = None,
               check: bool = True) -> dict[str, JobPlan]:
    """item id -> JobPlan (plan_job with out=<out_root>/<id>, outputs_root passed through for
    deployment runs, then check_backends); ManifestError with every row's problem at once.

    With `outputs_root`, `out_root` is relative to it. `check=False` skips `check_backends`
    (for a machine that only schedules the work)."""
    if objects.is_remote(out_root):
        root = str(out_root)
    else:
        root = str(Path(out_root) if outputs_root is not None else Path(out_root).expanduser().resolve())

    def plan(item: ManifestItem) -> JobPlan | str:
        try:
            # an object store's input is planned by its URL (the plan names it; its copy is reused)
            source = item.url if objects.is_remote(item.url) else item.input
            job = plan_job(source, item.langs, item.options, out=objects.join(root, item.id),
                           outputs_root=outputs_root)
            if check:
                check_backends(job)
            return job
        except InputError as exc:
            return f"{item.where}: {exc}"
        except OSError as exc:  # a path the file system refuses (a name too long)
            return f"{item.where}: {exc.filename}: {exc.strerror or exc}"

    with ThreadPoolExecutor(PLAN_WORKERS) as pool:
        results = list(pool.map(plan, manifest.items))
    problems = [r for r in results if isinstance(r, str)]
    if problems:
        raise ManifestError(manifest.path, problems)
    return {item.id: job for item, job in zip(manifest.items, results)}
