"""Records -> static-shape token arrays, following the token-layout contract (DESIGN.md §2).

QA record:   [BOS] + tok(prompt) + tok(answer) + [EOS], prompt and answer tokenized separately
             (no special tokens) and concatenated; loss mask on the answer tokens and EOS.
Text record: [BOS] + tok(text) + [EOS]; loss mask on every token after BOS.
A tokenizer without a BOS token omits it. ``loss_mask[b, t] = 1`` means token t is a target (predicted
from position t − 1). Every set is right-padded to one length, rounded up to a multiple of
``LENGTH_MULTIPLE``, so a run compiles once per set rather than once per batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from unlearn_jax.errors import UserError

LENGTH_MULTIPLE = 8


@dataclasses.dataclass(frozen=True)
class TokenSet:
    """N encoded records, right-padded to a common length S: input_ids, attention_mask, loss_mask are
    int32 [N, S]; ``record_ids`` names each row."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    loss_mask: np.ndarray
    record_ids: tuple[str, ...]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, index) -> dict[str, np.ndarray]:
        """The arrays of the chosen rows, as a batch dict."""
        return {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index],
                "loss_mask": self.loss_mask[index]}

    def subset(self, index) -> TokenSet:
        index = np.asarray(index)
        return TokenSet(self.input_ids[index], self.attention_mask[index], self.loss_mask[index],
                        tuple(self.record_ids[i] for i in index))


def padded_length(longest: int, multiple: int = LENGTH_MULTIPLE) -> int:
    return max(multiple, math.ceil(longest / multiple) * multiple)


def special_ids(tokenizer) -> tuple[int | None, int, int]:
    """(bos, eos, pad) ids; EOS is required (it ends every answer); pad falls back to EOS."""
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no EOS token; answers must end with one")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return tokenizer.bos_token_id, tokenizer.eos_token_id, pad


def _tokenize(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
        return []
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def encode_records(
    records: Sequence[dict],
    tokenizer,
    *,
    answer_field: str = "answer",
    max_length: int | None = None,
    length: int | None = None,
    source: str | None = None,
) -> TokenSet:
    """Encode QA records (``answer_field`` picks the target: answer, idk_answer, paraphrased_answer …)
    or text records. ``max_length``: the model's context (longer records are refused). ``length``:
    pad to exactly this length instead of the rounded-up longest record. ``source`` (e.g. ``--forget
    FILE``) prefixes error messages, so they name the input."""
    where = f"{source}: " if source else ""
    if not records:
        raise UserError(f"{where}no records to encode")
    bos, eos, pad = special_ids(tokenizer)
    prefix = [bos] if bos is not None else []
    if "text" in records[0]:
        sequences = [(prefix + t + [eos], len(prefix)) for t in _tokenize(tokenizer, [r["text"] for r in records])]
    else:
        missing = [r.get("id", "?") for r in records if not isinstance(r.get(answer_field), str)]
        if missing:
            raise UserError(f"{where}record {missing[0]} has no {answer_field!r} (needed as the target)")
        prompts = _tokenize(tokenizer, [r["prompt"] for r in records])
        answers = _tokenize(tokenizer, [r[answer_field] for r in records])
        sequences = [(prefix + p + a + [eos], len(prefix) + len(p)) for p, a in zip(prompts, answers, strict=True)]
    longest = max(len(s) for s, _ in sequences)
    if max_length is not None and longest > max_length:
        worst = max(range(len(sequences)), key=lambda i: len(sequences[i][0]))
        raise UserError(f"{where}record {records[worst].get('id', worst)} is {longest} tokens long, longer than "
                        f"the model's context of {max_length}")
    width = length if length is not None else padded_length(longest)
    if width < longest:
        raise UserError(f"records need {longest} tokens but the padded length is {width}")
    return token_set(sequences, width, pad, tuple(str(r.get("id", i)) for i, r in enumerate(records)))


def token_set(sequences: Sequence[tuple[Sequence[int], int]], width: int, pad: int,
              record_ids: tuple[str, ...]) -> TokenSet:
    """Right-pad (tokens, target_start) pairs to ``width``; the loss mask covers tokens[target_start:]."""
    ids = np.full((len(sequences), width), pad, np.int32)
    attention = np.zeros_like(ids)
    loss = np.zeros_like(ids)
    for row, (tokens, target_start) in enumerate(sequences):
        ids[row, : len(tokens)] = tokens
        attention[row, : len(tokens)] = 1
        loss[row, target_start : len(tokens)] = 1
    return TokenSet(ids, attention, loss, record_ids)


def encode_prompts(records: Sequence[dict], tokenizer, *, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[BOS] + tok(prompt), right-padded: (input_ids, prompt_lengths), for greedy generation."""
    bos, _, pad = special_ids(tokenizer)
    prefix = [bos] if bos is not None else []
    prompts = [prefix + p for p in _tokenize(tokenizer, [r["prompt"] for r in records])]
    width = length if length is not None else padded_length(max(len(p) for p in prompts))
    ids = np.full((len(prompts), width), pad, np.int32)
    for row, tokens in enumerate(prompts):
        ids[row, : len(tokens)] = tokens
    return ids, np.array([len(p) for p in prompts], np.int32)


def pack(data: TokenSet, order: Sequence[int], rows: int, length: int) -> tuple[dict[str, np.ndarray], int]:
    """Pack records, in ``order``, into a [rows, length] batch until the next one does not fit.

    Each record keeps its own tokens and loss mask; ``attention_mask`` holds segment ids (1, 2, … within
    a row, 0 = padding) so records never attend to each other, and ``position_ids`` restart at 0 for
    each record. Returns (batch, number of records of ``order`` used). Token-mean losses over a packed
    batch equal those over the same records unpacked; packing just drops the padding.
    """
    lengths = data.attention_mask.sum(axis=1)
    ids = np.zeros((rows, length), np.int32)
    segments = np.zeros_like(ids)
    loss = np.zeros_like(ids)
    positions = np.zeros_like(ids)
    row, col, used = 0, 0, 0
    for index in order:
        n = int(lengths[index])
        if n > length:
            raise UserError(f"record {data.record_ids[index]} ({n} tokens) does not fit a packed row of {length}")
        if col + n > length:
            row, col = row + 1, 0
        if row == rows:
            break
        ids[row, col : col + n] = data.input_ids[index, :n]
        loss[row, col : col + n] = data.loss_mask[index, :n]
        segments[row, col : col + n] = segments[row, :col].max(initial=0) + 1
        positions[row, col : col + n] = np.arange(n)
        col += n
        used += 1
    return {"input_ids": ids, "attention_mask": segments, "loss_mask": loss, "position_ids": positions}, used
