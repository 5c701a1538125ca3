"""An lm-evaluation-harness model backed by our JAX model, registered as ``unlearn_jax``.

    import lm_eval, unlearn_jax.evaluation.lm_eval_adapter
    lm_eval.simple_evaluate(model="unlearn_jax", model_args="pretrained=runs/npo", tasks=[...])

or ``python -m unlearn_jax.lm_eval --model unlearn_jax --model_args pretrained=DIR --tasks ...`` (lm-eval's
own CLI with this model registered), or ``unlearn-jax eval --lm-eval-tasks ...``.

It follows lm-eval's ``hf`` model request by request, so the numbers are comparable with published ones:
tokenization through ``TemplateLM._encode_pair`` (the tokenizer's default special tokens, so a BOS is
prepended where the tokenizer adds one), left truncation to ``max_length`` + 1 tokens, BOS as the prefix of
an empty context and of rolling windows, greedy decoding cut at the ``until`` strings. Requests are sorted
by length and bucketed to power-of-two widths, so a task compiles a handful of shapes; every batch runs
one jitted forward (``evaluation.knowledge.record_stats``) or one jitted greedy loop
(``evaluation.generate.greedy_tokens``: no KV cache, fine for short generations). Sampling is refused: the
adapter decodes greedily only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (
    handle_stop_sequences,
    has_bos_prefix,
    normalize_gen_kwargs,
    postprocess_generated_text,
    resolve_max_length,
)
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from unlearn_jax.data.tokenize import token_set
from unlearn_jax.evaluation.generate import greedy_tokens
from unlearn_jax.evaluation.knowledge import record_stats
from unlearn_jax.models.hf import load_model

DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_LENGTH = 2048
MAX_GEN_TOKS = 256


def bucket_width(longest: int) -> int:
    """The padded width for a batch whose longest row has ``longest`` tokens: a power of two, at least 8."""
    return max(8, 1 << (max(longest, 1) - 1).bit_length())


@register_model("unlearn_jax")
class UnlearnJaxLM(TemplateLM):
    """lm-eval model over ``unlearn_jax.load_model(pretrained)``: a model or run directory, or a hub id;
    ``loaded`` wraps a model already loaded (``pretrained`` then only names it)."""

    def __init__(self, pretrained: str, batch_size: int | str | None = DEFAULT_BATCH_SIZE, dtype: str = "float32",
                 max_length: int | None = None, add_bos_token: bool | None = None,
                 prefix_token_id: int | None = None, max_gen_toks: int = MAX_GEN_TOKS, loaded=None,
                 **ignored) -> None:
        super().__init__()
        self.lm = loaded if loaded is not None else load_model(pretrained, dtype=str(dtype))
        self.tokenizer = self.lm.tokenizer
        auto = batch_size in (None, "auto") or str(batch_size).startswith("auto")
        self._batch_size = DEFAULT_BATCH_SIZE if auto else int(batch_size)
        self._max_length = int(max_length) if max_length else resolve_max_length(
            self.lm.hf_config, self.tokenizer, default=DEFAULT_MAX_LENGTH)
        self.add_bos_token = None if add_bos_token is None else str(add_bos_token).lower() in ("1", "true")
        self._prefix_token_id = None if prefix_token_id is None else int(prefix_token_id)
        self._max_gen_toks = int(max_gen_toks)
        self.pretrained = str(pretrained)

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        if self._prefix_token_id is not None:
            return self._prefix_token_id
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        if add_special_tokens is None:
            add_special_tokens = self.add_bos_token
            if has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
                add_special_tokens = False
        special = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return self.tokenizer.encode(string, **special)

    def _score(self, sequences: Sequence[tuple[list[int], int]]) -> tuple[np.ndarray, np.ndarray]:
        """(Σ log p of the targets, all targets greedy) per (tokens, target_start), in input order."""
        logprob, greedy = np.zeros(len(sequences)), np.zeros(len(sequences), bool)
        by_width = defaultdict(list)
        for i, (tokens, _) in enumerate(sequences):
            by_width[bucket_width(len(tokens))].append(i)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
        for width, index in sorted(by_width.items()):
            data = token_set([sequences[i] for i in index], width, pad, tuple(str(i) for i in index))
            stats = record_stats(self.lm.params, self.lm.config, data, self._batch_size)
            logprob[index], greedy[index] = -stats["nll"], stats["correct"]
        return logprob, greedy

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        sequences = []
        for _, context, continuation in requests:
            tokens = (list(context) + list(continuation))[-(self.max_length + 1):]
            sequences.append((tokens, len(tokens) - len(continuation)))
        logprob, greedy = self._score(sequences)
        results = [(float(lp), bool(g)) for lp, g in zip(logprob, greedy, strict=True)]
        for (pair, _, _), result in zip(requests, results, strict=True):
            if pair is not None:
                self.cache_hook.add_partial("loglikelihood", pair, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owners = [], []
        for i, (string,) in enumerate(req.args for req in requests):
            for context, predicted in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, context, predicted))
                owners.append(i)
        scores = self._loglikelihood_tokens(windows) if windows else []
        totals = np.zeros(len(requests))
        for owner, (lp, _) in zip(owners, scores, strict=True):
            totals[owner] += lp
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, float(total))
        return [float(t) for t in totals]

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        groups = defaultdict(list)
        for i, req in enumerate(requests):
            groups[repr(sorted(req.args[1].items()))].append(i)
        eos_text = self.tokenizer.decode(self.eot_token_id, skip_special_tokens=False)
        for index in groups.values():
            gen_kwargs = requests[index[0]].args[1]
            kwargs = normalize_gen_kwargs(dict(gen_kwargs), self._max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
            max_gen_toks = int(kwargs.pop("max_gen_toks"))
            if kwargs.get("do_sample") or float(kwargs.get("temperature", 0.0) or 0.0) > 0:
                raise ValueError(f"unlearn_jax decodes greedily only; the task asks for sampling ({gen_kwargs})")
            keep = self.max_length - max_gen_toks
            if keep <= 0:
                raise ValueError(f"max_gen_toks {max_gen_toks} leaves no room in the context of {self.max_length}")
            contexts = [self.tok_encode(requests[i].args[0])[-keep:] for i in index]
            by_width = defaultdict(list)
            for j, tokens in enumerate(contexts):
                by_width[bucket_width(len(tokens))].append(j)
            for width, rows in sorted(by_width.items()):
                ids = np.full((len(rows), width), self.eot_token_id, np.int32)
                for r, j in enumerate(rows):
                    ids[r, : len(contexts[j])] = contexts[j]
                lengths = np.array([len(contexts[j]) for j in rows], np.int32)
                new = greedy_tokens(self.lm.params, self.lm.config, ids, lengths, self.eot_token_id,
                                    max_new_tokens=max_gen_toks, batch_size=self._batch_size)
                for j, tokens in zip(rows, new, strict=True):
                    text = postprocess_generated_text(self.tokenizer.decode(tokens, skip_special_tokens=True),
                                                      stop=until, think_end_token=None)
                    results[index[j]] = text
                    self.cache_hook.add_partial("generate_until", requests[index[j]].args, text)
        return results

    def get_model_info(self) -> dict:
        return {"model_name": self.pretrained, "model_num_parameters": self.lm.config.num_params(),
                "model_dtype": self.lm.config.dtype}
