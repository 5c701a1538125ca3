"""The record contract: formats, validation errors, field maps and presets, ids, atomic writing."""

import csv
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from unlearn_jax.data import records as rec
from unlearn_jax.data.records import PRESETS, load_records, parse_field_map, preset_for, write_jsonl
from unlearn_jax.errors import UserError

QA = [
    {
        "id": "a",
        "prompt": "Where was Alden Voss born?",
        "answer": "Brenmoor",
        "perturbed_answers": ["the city of Drovik", "the city of Faroth"],
        "group": "birth_city",
    },
    {"id": "b", "prompt": "When was Alden Voss born?", "answer": "1987", "extra": "kept"},
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _json(path, rows):
    path.write_text(json.dumps(rows), encoding="utf-8")
    return str(path)


def _csv(path, rows):
    fields = sorted({k for r in rows for k in r})
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    return str(path)


def _parquet(path, rows):
    fields = sorted({k for r in rows for k in r})
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in fields} for r in rows]), path)
    return str(path)


WRITERS = {"jsonl": _jsonl, "json": _json, "csv": _csv, "parquet": _parquet}


@pytest.mark.parametrize("ext", list(WRITERS))
def test_every_format_loads_the_same_records(tmp_path, ext):
    records = load_records(WRITERS[ext](tmp_path / f"data.{ext}", QA))
    assert records == [{k: r[k] for k in rec.ordered(r)} for r in QA]
    assert list(records[0]) == ["id", "prompt", "answer", "perturbed_answers", "group"]
    assert records[1]["extra"] == "kept"


def test_text_records_and_kind(tmp_path):
    path = _jsonl(tmp_path / "corpus.jsonl", [{"text": "a b c"}, {"text": "d e", "source": "x"}])
    assert load_records(path, kind="text") == [
        {"id": "corpus.jsonl:1", "text": "a b c"},
        {"id": "corpus.jsonl:2", "text": "d e", "source": "x"},
    ]
    with pytest.raises(UserError, match=r"corpus\.jsonl: line 1: text record in a file of QA records"):
        load_records(path, kind="qa")
    with pytest.raises(UserError, match="unknown record kind"):
        load_records(path, kind="chat")


def test_auto_kind_follows_the_first_record(tmp_path):
    path = _jsonl(tmp_path / "mixed.jsonl", [QA[0], {"text": "loose text"}])
    with pytest.raises(UserError, match=r"mixed\.jsonl: line 2: text record in a file of QA records"):
        load_records(path)
    path = _jsonl(tmp_path / "mixed2.jsonl", [{"text": "loose text"}, {"prompt": "p", "answer": "a"}])
    with pytest.raises(UserError, match=r"mixed2\.jsonl: line 2: QA record in a file of text records"):
        load_records(path)


def test_stable_ids_from_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "p1", "answer": "a1"}\n\n{"prompt": "p2", "answer": "a2"}\n', encoding="utf-8")
    ids = [r["id"] for r in load_records(str(path))]
    assert ids == ["d.jsonl:1", "d.jsonl:3"]
    assert ids == [r["id"] for r in load_records(str(path))]
    rows = [{"prompt": "p", "answer": "a"}, {"id": 7, "prompt": "q", "answer": "b"}]
    assert [r["id"] for r in load_records(_json(tmp_path / "d.json", rows))] == ["d.json:0", "7"]


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "p", "answer": "a"}\n{"prompt": "p",\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.jsonl: line 2: malformed JSON"):
        load_records(str(path))
    path = tmp_path / "bad.json"
    path.write_text('[{"prompt": "p"},\n oops]', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.json: line 2: malformed JSON"):
        load_records(str(path))
    with pytest.raises(UserError, match="expected a JSON list"):
        load_records(_json(tmp_path / "obj.json", {"prompt": "p"}))
    with pytest.raises(UserError, match=r"line 1: expected a JSON object, got list"):
        load_records(_jsonl(tmp_path / "list.jsonl", [[1, 2]]))


@pytest.mark.parametrize("ext", list(WRITERS))
def test_missing_field_names_file_place_and_field(tmp_path, ext):
    path = WRITERS[ext](tmp_path / f"m.{ext}", [QA[0], {"id": "c", "prompt": "only a prompt"}])
    where = {"jsonl": "line 2", "json": "record 1", "csv": "line 3", "parquet": "record 1"}[ext]
    with pytest.raises(UserError, match=rf"m\.{ext}: {where}: field 'answer' is missing"):
        load_records(path)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "p", "answer": 3}, "field 'answer' must be a string, got int"),
        ({"prompt": ["p"], "answer": "a"}, "field 'prompt' must be a string, got list"),
        ({"prompt": "p", "answer": "a", "entity": 5}, "field 'entity' must be a string"),
        ({"prompt": "p", "answer": "a", "perturbed_answers": "x"}, "'perturbed_answers' must be a non-empty list"),
        ({"prompt": "p", "answer": "a", "perturbed_answers": ["x", 1]}, "'perturbed_answers' must be a non-empty"),
        ({"prompt": "p", "answer": "  "}, "field 'answer' is empty"),
        ({"id": 1.5, "prompt": "p", "answer": "a"}, "field 'id' must be a string or an integer"),
        ({"question": "p"}, "field 'prompt' is missing"),
    ],
)
def test_wrong_types_name_file_line_and_field(tmp_path, row, message):
    path = _jsonl(tmp_path / "t.jsonl", [QA[0], row])
    with pytest.raises(UserError, match=r"t\.jsonl: line 2: .*" + message.replace("(", r"\(")):
        load_records(path)


def test_first_record_of_unknown_kind(tmp_path):
    with pytest.raises(UserError, match=r"line 1: neither 'prompt'/'answer' .* nor 'text' .*--field-map"):
        load_records(_jsonl(tmp_path / "q.jsonl", [{"question": "p", "reply": "a"}]))


def test_text_field_type_is_checked(tmp_path):
    with pytest.raises(UserError, match=r"line 1: field 'text' must be a string"):
        load_records(_jsonl(tmp_path / "t.jsonl", [{"text": 3}]))


@pytest.mark.parametrize("content", ["", "\n\n", "[]"])
def test_empty_file_is_an_error(tmp_path, content):
    path = tmp_path / ("empty.json" if content == "[]" else "empty.jsonl")
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match="contains no records"):
        load_records(str(path))


def test_missing_file_unknown_extension_and_duplicates(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_records(str(tmp_path / "nope.jsonl"))
    (tmp_path / "data.txt").write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match="unknown file type"):
        load_records(str(tmp_path / "data.txt"))
    path = _jsonl(tmp_path / "dup.jsonl", [QA[0], QA[1], QA[0]])
    with pytest.raises(UserError, match=r"dup\.jsonl: line 3: duplicate id 'a' \(first at .*line 1\)"):
        load_records(path)


def test_csv_cells(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("prompt,answer,perturbed_answers\np,a,not json\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"c\.csv: line 2: field 'perturbed_answers' must be a JSON list"):
        load_records(str(path))
    path.write_text('prompt,answer,group\n"two\nlines",a,\n', encoding="utf-8")
    assert load_records(str(path)) == [{"id": "c.csv:3", "prompt": "two\nlines", "answer": "a"}]


def test_parse_field_map():
    assert parse_field_map("prompt=question, answer=answer") == {"prompt": "question", "answer": "answer"}
    assert parse_field_map("tofu") == PRESETS["tofu"]
    for bad in ["", "prompt", "prompt=", "=question", "colour=x", "prompt=a,prompt=b"]:
        with pytest.raises(UserError, match="--field-map"):
            parse_field_map(bad)


def test_field_map_renames_and_keeps_other_fields(tmp_path):
    rows = [{"question": "q?", "answer": "a", "perturbed_answer": ["b", "c"], "paraphrased_answer": "pa", "n": 1}]
    path = _jsonl(tmp_path / "tofu.jsonl", rows)
    record = load_records(path, parse_field_map("tofu"))[0]
    assert record == {
        "id": "tofu.jsonl:1",
        "prompt": "q?",
        "answer": "a",
        "paraphrased_answer": "pa",
        "perturbed_answers": ["b", "c"],
        "n": 1,
    }
    with pytest.raises(UserError, match=r"line 1: field 'prompt' is missing \(mapped from 'query'\)"):
        load_records(path, {"prompt": "query"})


def test_presets_apply_to_hub_names():
    assert preset_for("hf:locuslab/TOFU:forget10") == PRESETS["tofu"]
    assert preset_for("hf:muse-bench/MUSE-News:raw:forget") == PRESETS["muse"]
    assert preset_for("hf:cais/wmdp-corpora:bio-forget-corpus") == PRESETS["wmdp"]
    assert preset_for("hf:someone/else") is None
    assert preset_for("data/forget.jsonl") is None


def test_hub_source_through_datasets(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load(name, config, split=None):
        calls.append((name, config, split))
        rows = [{"question": "Who?", "answer": "Me", "perturbed_answer": ["You", "Them"]}]
        return datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)})

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    records = load_records("hf:locuslab/TOFU:forget10")
    assert calls == [("locuslab/TOFU", "forget10", None)]
    assert records == [
        {"id": "locuslab/TOFU:forget10:0", "prompt": "Who?", "answer": "Me", "perturbed_answers": ["You", "Them"]}
    ]


def test_hub_unreachable_is_a_user_error(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(rec, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(UserError, match="hub is unreachable.*local file"):
        load_records("hf:locuslab/TOFU:forget10")
    with pytest.raises(UserError, match="expected hf:NAME"):
        load_records("hf:a:b:c:d")


def test_hub_failure_is_a_user_error(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def failing(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'x/y' on the Hub")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(UserError, match=r"hf:x/y: could not load through datasets \(Couldn't reach"):
        load_records("hf:x/y")


def test_write_jsonl_is_ordered_atomic_and_round_trips(tmp_path):
    path = tmp_path / "sub" / "out.jsonl"
    records = [{"z": 1, "answer": "Brenmoor é", "id": "x", "prompt": "p"}]
    write_jsonl(path, records)
    assert path.read_text(encoding="utf-8") == '{"id": "x", "prompt": "p", "answer": "Brenmoor é", "z": 1}\n'
    assert load_records(str(path)) == [rec.ordered(records[0])]
    assert os.listdir(path.parent) == ["out.jsonl"]

    def broken():
        yield {"id": "y", "prompt": "p", "answer": "a"}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl(path, broken())
    assert os.listdir(path.parent) == ["out.jsonl"]
    assert load_records(str(path))[0]["id"] == "x"
