"""`unlearn-jax score`: per-record memorization scores of a model on a data file, as JSONL."""

from __future__ import annotations

import os
from pathlib import Path

from unlearn_jax.data.records import load_records, parse_field_map, write_jsonl
from unlearn_jax.data.tokenize import encode_records
from unlearn_jax.errors import UserError
from unlearn_jax.fileio import check_writable_target
from unlearn_jax.models.hf import load_model
from unlearn_jax.scores.memorization import score_records


def target_texts(records: list[dict]) -> list[str]:
    """The scored text of each record: its answer (QA) or its text."""
    return [r["text"] if "text" in r else r["answer"] for r in records]


def score(model: str, data: str, out: str, *, k: float = 0.2, field_map: str | None = None, force: bool = False,
          quiet: bool = False) -> list[dict]:
    if not 0 < k <= 1:
        raise UserError(f"--k must be in (0, 1] (got {k})")
    out_path = Path(out)
    if out_path.exists() and not force:
        raise UserError(f"--out {out}: already exists (pass --force to replace it)")
    if out_path.is_dir():
        raise UserError(f"--out {out}: is a directory; give a .jsonl file path")
    check_writable_target(out_path.absolute())  # before the work, not after it
    lm = load_model(model)
    if lm.tokenizer is None:
        raise UserError(f"--model {model}: has no tokenizer files")
    records = load_records(data, parse_field_map(field_map) if field_map else None)
    encoded = encode_records(records, lm.tokenizer, max_length=lm.config.max_position_embeddings,
                             source=f"--data {data}")
    rows = score_records(lm.params, lm.config, encoded, target_texts(records), k=k)
    write_jsonl(out_path, rows)
    if not quiet:
        mean = {key: sum(float(r[key]) for r in rows) / len(rows) for key in ("loss", "mink", "minkpp", "correct")}
        print(f"scored {len(rows)} records -> {os.path.abspath(out)}  mean loss {mean['loss']:.3f}  "
              f"mink {mean['mink']:.3f}  minkpp {mean['minkpp']:.3f}  correct {mean['correct']:.3f}")
    return rows
