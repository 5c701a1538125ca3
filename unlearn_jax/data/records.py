"""The data contract: loading, validating and writing QA and text records (DESIGN.md §2).

A QA record is ``{"id", "prompt", "answer"}`` plus the optional fields ``paraphrased_prompt``,
``paraphrased_answer``, ``perturbed_answers`` (list of str), ``idk_answer``, ``entity`` and ``group``.
A text record is ``{"id", "text"}``. Any other field is kept as it is (pass-through).

Sources: ``.jsonl``, ``.json`` (a JSON list of objects), ``.csv`` (``perturbed_answers`` as a JSON
list in its cell), ``.parquet``, or ``hf:NAME[:CONFIG][:SPLIT]`` through ``datasets.load_dataset``.
Errors name the source, the place (``line N`` for JSONL and CSV, ``record I`` — 0-based — for JSON,
parquet and hub data) and the field. A record without an ``id`` gets ``"{basename}:{N or I}"``.

Field maps rename source fields onto the schema, ``DEST=SOURCE`` (``prompt=question``). Built-in
presets for the public benchmarks (applied automatically to matching ``hf:`` names, and usable by
name as ``--field-map tofu``):

- ``tofu`` (``hf:locuslab/TOFU``): prompt←question, answer←answer,
  paraphrased_prompt←paraphrased_question, paraphrased_answer←paraphrased_answer,
  perturbed_answers←perturbed_answer (a list of str in TOFU).
- ``muse`` (``hf:muse-bench/*``): text←text; the knowmem configs' question/answer become
  prompt/answer.
- ``wmdp`` (``hf:cais/wmdp-corpora*``): text←text.
"""

from __future__ import annotations

import csv
import json
import os
import socket
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlparse

from unlearn_jax.errors import UserError
from unlearn_jax.fileio import write_text_atomic

QA_REQUIRED = ("prompt", "answer")
QA_OPTIONAL_STR = ("paraphrased_prompt", "paraphrased_answer", "idk_answer", "entity", "group")
KEY_ORDER = (
    "id",
    "prompt",
    "answer",
    "paraphrased_prompt",
    "paraphrased_answer",
    "perturbed_answers",
    "idk_answer",
    "entity",
    "group",
    "text",
)
KINDS = ("qa", "text", "auto")

PRESETS: dict[str, dict[str, str]] = {
    "tofu": {
        "prompt": "question",
        "answer": "answer",
        "paraphrased_prompt": "paraphrased_question",
        "paraphrased_answer": "paraphrased_answer",
        "perturbed_answers": "perturbed_answer",
    },
    "muse": {"text": "text", "prompt": "question", "answer": "answer"},
    "wmdp": {"text": "text"},
}

Raw = tuple[str, int, Any]


def parse_field_map(spec: str) -> dict[str, str]:
    """Parse ``"prompt=question,answer=answer"`` (or a preset name) into ``{dest: source}``."""
    spec = spec.strip()
    if spec in PRESETS:
        return dict(PRESETS[spec])
    if not spec:
        raise UserError("--field-map is empty: expected DEST=SOURCE[,DEST=SOURCE...] or a preset name")
    mapping: dict[str, str] = {}
    for item in spec.split(","):
        dest, sep, source = (part.strip() for part in item.partition("="))
        if not sep or not dest or not source:
            raise UserError(
                f"--field-map: bad entry {item.strip()!r}: expected DEST=SOURCE "
                f"(e.g. prompt=question) or a preset ({', '.join(PRESETS)})"
            )
        if dest not in KEY_ORDER:
            raise UserError(f"--field-map: unknown field {dest!r}: choose from {', '.join(KEY_ORDER)}")
        if dest in mapping:
            raise UserError(f"--field-map: field {dest!r} is mapped twice")
        mapping[dest] = source
    return mapping


def preset_for(source: str) -> dict[str, str] | None:
    """The built-in field map for an ``hf:`` source name, or None."""
    if not source.startswith("hf:"):
        return None
    name = source[3:].split(":", 1)[0].lower()
    if name == "locuslab/tofu":
        return dict(PRESETS["tofu"])
    if name.startswith("muse-bench/"):
        return dict(PRESETS["muse"])
    if name.startswith("cais/wmdp-corpora"):
        return dict(PRESETS["wmdp"])
    return None


def load_records(source: str, field_map: Mapping[str, str] | None = None, kind: str = "auto") -> list[dict[str, Any]]:
    """Load and validate every record of ``source``; see the module docstring for the formats.

    ``kind`` is ``"qa"``, ``"text"`` or ``"auto"`` (all records share the kind of the first one).
    Raises UserError for a missing file, a malformed or empty source, a missing or wrong-typed field,
    or duplicate ids.
    """
    if kind not in KINDS:
        raise UserError(f"unknown record kind {kind!r}: choose from {', '.join(KINDS)}")
    mapping = {**(preset_for(source) or {}), **(field_map or {})}
    records: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for where, number, raw in _read_raw(source):
        label = _label(source, where, number)
        record = _apply_field_map(raw, mapping, label)
        if kind == "auto":
            kind = _kind_of(record, label)
        record = _validate(record, kind, label, f"{_basename(source)}:{number}", mapping)
        if record["id"] in seen:
            raise UserError(f"{label}: duplicate id {record['id']!r} (first at {seen[record['id']]})")
        seen[record["id"]] = label
        records.append(record)
    if not records:
        raise UserError(f"{source}: contains no records")
    return records


def write_jsonl(path: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> None:
    """Write records as JSONL atomically (temp file + rename), schema keys first, in order."""
    write_text_atomic(path, "".join(json.dumps(ordered(r), ensure_ascii=False) + "\n" for r in records))


def ordered(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record with schema keys first (in ``KEY_ORDER``), then the extra keys sorted."""
    head = {k: record[k] for k in KEY_ORDER if k in record}
    tail = {k: record[k] for k in sorted(record) if k not in head}
    return {**head, **tail}


def _label(source: str, where: str, number: int) -> str:
    return f"{source}: {where} {number}"


def _basename(source: str) -> str:
    if source.startswith("hf:"):
        return source[3:]
    return os.path.basename(source)


def _read_raw(source: str) -> Iterator[Raw]:
    if source.startswith("hf:"):
        return _read_hf(source)
    if not os.path.isfile(source):
        raise UserError(f"{source}: no such file")
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}
    ext = os.path.splitext(source)[1].lower()
    if ext not in readers:
        raise UserError(
            f"{source}: unknown file type {ext or '(none)'!r}: use .jsonl, .json, .csv, .parquet or hf:NAME"
        )
    return readers[ext](source)


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None


def _read_jsonl(path: str) -> Iterator[Raw]:
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield "line", number, json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: line {number}: malformed JSON ({e.msg}, column {e.colno})") from None


def _read_json(path: str) -> Iterator[Raw]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: line {e.lineno}: malformed JSON ({e.msg}, column {e.colno})") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    for index, item in enumerate(data):
        yield "record", index, item


def _read_csv(path: str) -> Iterator[Raw]:
    text = _read_text(path)
    reader = csv.DictReader(text.splitlines(keepends=True))
    try:
        for row in reader:
            if None in row:
                raise UserError(f"{path}: line {reader.line_num}: more cells than header columns")
            yield "line", reader.line_num, _csv_row(row, path, reader.line_num)
    except csv.Error as e:
        raise UserError(f"{path}: line {reader.line_num}: malformed CSV ({e})") from None


def _csv_row(row: dict[str, str | None], path: str, line: int) -> dict[str, Any]:
    record: dict[str, Any] = {k: v for k, v in row.items() if v not in ("", None)}
    if isinstance(record.get("perturbed_answers"), str):
        try:
            record["perturbed_answers"] = json.loads(record["perturbed_answers"])
        except json.JSONDecodeError:
            raise UserError(
                f"{path}: line {line}: field 'perturbed_answers' must be a JSON list of strings in CSV"
            ) from None
    return record


def _read_parquet(path: str) -> Iterator[Raw]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # noqa: BLE001 - any pyarrow failure means an unreadable file
        raise UserError(f"{path}: cannot read parquet ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    for index, row in enumerate(rows):
        yield "record", index, _drop_nulls(row)


def _drop_nulls(row: Mapping[str, Any]) -> dict[str, Any]:
    """Columnar sources fill absent fields with None: treat those as absent."""
    return {k: v for k, v in row.items() if v is not None}


def _parse_hf(source: str) -> tuple[str, str | None, str | None]:
    parts = source[3:].split(":")
    if not parts[0] or len(parts) > 3 or any(not p for p in parts[1:]):
        raise UserError(f"{source}: expected hf:NAME[:CONFIG][:SPLIT]")
    return parts[0], (parts[1] if len(parts) > 1 else None), (parts[2] if len(parts) > 2 else None)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint accepts a TCP connection within ``timeout`` seconds."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_mode() -> bool:
    flags = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    return any(os.environ.get(f, "").lower() in ("1", "true", "yes", "on") for f in flags)


def _read_hf(source: str) -> Iterator[Raw]:
    name, config, split = _parse_hf(source)
    if not _offline_mode() and not hub_reachable():
        raise UserError(
            f"{source}: the Hugging Face hub is unreachable; download the data and pass a local file "
            "(or set HF_HUB_OFFLINE=1 to use the local cache)"
        )
    try:
        import datasets

        loaded = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # noqa: BLE001 - network, auth and missing-config errors all end here
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(
            f"{source}: could not load through datasets ({first}); check the name, or pass a local file"
        ) from None
    if isinstance(loaded, Mapping):
        loaded = _pick_split(source, loaded)
    for index, row in enumerate(loaded):
        yield "record", index, _drop_nulls(row)


def _pick_split(source: str, splits: Mapping[str, Any]) -> Any:
    if len(splits) == 1:
        return next(iter(splits.values()))
    if "train" in splits:
        return splits["train"]
    raise UserError(f"{source}: several splits ({', '.join(splits)}); add one as hf:NAME:CONFIG:SPLIT")


def _apply_field_map(raw: Any, mapping: Mapping[str, str], label: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise UserError(f"{label}: expected a JSON object, got {type(raw).__name__}")
    if not mapping:
        return dict(raw)
    sources = set(mapping.values())
    record = {k: v for k, v in raw.items() if k not in sources or k in mapping}
    for dest, src in mapping.items():
        if src in raw:
            record[dest] = raw[src]
    return record


def _kind_of(record: Mapping[str, Any], label: str) -> str:
    if "prompt" in record or "answer" in record:
        return "qa"
    if "text" in record:
        return "text"
    raise UserError(
        f"{label}: neither 'prompt'/'answer' (QA record) nor 'text' (text record) found; "
        "rename fields with --field-map DEST=SOURCE"
    )


def _validate(
    record: dict[str, Any], kind: str, label: str, default_id: str, mapping: Mapping[str, str]
) -> dict[str, Any]:
    record = {k: v for k, v in record.items() if not (v is None and k in KEY_ORDER)}
    record["id"] = _check_id(record.get("id", default_id), label)
    if kind == "qa":
        if "prompt" not in record and "answer" not in record and "text" in record:
            raise UserError(f"{label}: text record in a file of QA records (fields 'prompt'/'answer' missing)")
        for field in QA_REQUIRED:
            _check_str(record, field, label, required=True, mapping=mapping)
        for field in QA_OPTIONAL_STR:
            _check_str(record, field, label, required=False)
        _check_str_list(record, "perturbed_answers", label)
    else:
        if "text" not in record and ("prompt" in record or "answer" in record):
            raise UserError(f"{label}: QA record in a file of text records (field 'text' missing)")
        _check_str(record, "text", label, required=True, mapping=mapping)
    return ordered(record)


def _check_id(value: Any, label: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UserError(f"{label}: field 'id' must be a string or an integer, got {type(value).__name__}")
    value = str(value)
    if not value:
        raise UserError(f"{label}: field 'id' is empty")
    return value


def _check_str(
    record: Mapping[str, Any],
    field: str,
    label: str,
    required: bool,
    mapping: Mapping[str, str] | None = None,
) -> None:
    if field not in record:
        if required:
            source = (mapping or {}).get(field, field)
            note = f" (mapped from {source!r})" if source != field else ""
            raise UserError(f"{label}: field {field!r} is missing{note}")
        return
    value = record[field]
    if not isinstance(value, str):
        raise UserError(f"{label}: field {field!r} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise UserError(f"{label}: field {field!r} is empty")


def _check_str_list(record: Mapping[str, Any], field: str, label: str) -> None:
    if field not in record:
        return
    value = record[field]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise UserError(f"{label}: field {field!r} must be a non-empty list of strings")
