"""Memorization scores against an independent PyTorch computation; selection of the least memorized."""

import math
import zlib

import numpy as np
import pytest
import torch

from tests.hf_models import make_hf_model
from unlearn_jax import UserError, load_model
from unlearn_jax.data.tokenize import TokenSet
from unlearn_jax.scores.memorization import least_memorized, score_records


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    model = make_hf_model("llama")
    path = tmp_path_factory.mktemp("m")
    model.save_pretrained(path)
    lm = load_model(path)
    rng = np.random.default_rng(0)
    lengths = np.array([16, 11, 7, 13, 9])  # padding in the batch
    ids = rng.integers(3, lm.config.vocab_size, size=(5, 16)).astype(np.int32)
    attention = (np.arange(16)[None] < lengths[:, None]).astype(np.int32)
    loss = attention.copy()
    loss[:, :4] = 0
    data = TokenSet(ids * attention, attention, loss, tuple(f"r{i}" for i in range(5)))
    texts = ["alpha beta", "gamma", "delta delta delta", "x", "long answer text here"]
    return model, data, texts, score_records(lm.params, lm.config, data, texts, k=0.2, batch_size=3)


def torch_scores(model, data, k):
    ids = torch.tensor(data.input_ids, dtype=torch.long)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.tensor(data.attention_mask)).logits[:, :-1].double()
    logp = torch.log_softmax(logits, -1)
    out = []
    for b in range(ids.shape[0]):
        positions = [t for t in range(ids.shape[1] - 1) if data.loss_mask[b, t + 1]]
        lp = np.array([logp[b, t, ids[b, t + 1]].item() for t in positions])
        z = []
        for t in positions:
            p = logp[b, t].exp()
            mu = (p * logp[b, t]).sum().item()
            var = max((p * logp[b, t] ** 2).sum().item() - mu**2, 1e-6)
            z.append((logp[b, t, ids[b, t + 1]].item() - mu) / math.sqrt(var))
        m = max(1, math.floor(k * len(lp)))
        argmax = [logits[b, t].argmax().item() == ids[b, t + 1].item() for t in positions]
        out.append({"loss": -lp.mean(), "mink": np.sort(lp)[:m].mean(), "minkpp": np.sort(z)[:m].mean(),
                    "exact_match": np.mean(argmax), "correct": all(argmax)})
    return out


def test_scores_match_pytorch(scored):
    model, data, texts, rows = scored
    for k, suffix in ((0.2, ""), (0.4, "_k04")):
        for ours, ref in zip(rows, torch_scores(model, data, k), strict=True):
            np.testing.assert_allclose(ours["mink" + suffix], ref["mink"], rtol=1e-4)
            np.testing.assert_allclose(ours["minkpp" + suffix], ref["minkpp"], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(ours["loss"], ref["loss"], rtol=1e-5)
            assert ours["exact_match"] == pytest.approx(ref["exact_match"]) and ours["correct"] == ref["correct"]
    for row, text in zip(rows, texts, strict=True):
        assert row["zlib"] == pytest.approx(row["loss"] / len(zlib.compress(text.encode())))
    assert [r["id"] for r in rows] == list(data.record_ids)


def test_least_memorized_picks_the_lowest_scores():
    rows = [{"mink": v, "minkpp": v, "loss": -v, "correct": v > 0, "zlib": 0.0, "exact_match": 0.0}
            for v in [0.5, -2.0, 1.0, -1.0, 0.0]]
    assert least_memorized(rows, "mink", 0.4) == [1, 3]
    assert least_memorized(rows, "loss", 0.4) == [1, 3]  # highest loss = least memorized
    assert least_memorized(rows, "correct", 0.6) == [1, 3, 4]  # wrong first, higher loss first
    assert least_memorized(rows, "minkpp", 0.0) == []
    with pytest.raises(UserError, match="--drop must be in"):
        least_memorized(rows, "mink", 1.0)
    with pytest.raises(UserError, match="--select 'bogus'"):
        least_memorized(rows, "bogus", 0.1)


def test_bad_k(scored):
    model, data, texts, _ = scored
    with pytest.raises(UserError, match="--k must be in"):
        score_records(None, None, data, texts, k=0.0)
