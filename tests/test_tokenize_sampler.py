"""Token layout contract and the resumable sampler."""

import numpy as np
import pytest
import tokenizers
import transformers

from unlearn_jax import UserError
from unlearn_jax.data.sampler import EpochSampler
from unlearn_jax.data.tokenize import encode_prompts, encode_records


@pytest.fixture(scope="module")
def tokenizer():
    words = ["<pad>", "<unk>", "<s>", "</s>", "Where", "was", "Ann", "born?", "Oslo", "New", "Alden", "I", "don't",
             "know"]
    model = tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>")
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                pad_token="<pad>", unk_token="<unk>")


def test_qa_layout_and_loss_mask(tokenizer):
    records = [{"id": "a", "prompt": "Where was Ann born?", "answer": "New Alden", "idk_answer": "I don't know"},
               {"id": "b", "prompt": "Where was Ann born?", "answer": "Oslo"}]
    data = encode_records(records, tokenizer)
    assert data.input_ids.shape == (2, 8)
    np.testing.assert_array_equal(data.input_ids[0, :8], [2, 4, 5, 6, 7, 9, 10, 3])
    np.testing.assert_array_equal(data.loss_mask[0], [0, 0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(data.input_ids[1], [2, 4, 5, 6, 7, 8, 3, 0])
    np.testing.assert_array_equal(data.attention_mask[1], [1, 1, 1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(data.loss_mask[1], [0, 0, 0, 0, 0, 1, 1, 0])
    assert data.record_ids == ("a", "b")
    idk = encode_records(records[:1], tokenizer, answer_field="idk_answer")
    np.testing.assert_array_equal(idk.input_ids[0, 5:9], [11, 12, 13, 3])
    with pytest.raises(UserError, match="record b has no 'idk_answer'"):
        encode_records(records, tokenizer, answer_field="idk_answer")


def test_text_layout_and_limits(tokenizer):
    data = encode_records([{"id": "t", "text": "Ann was born?"}], tokenizer)
    np.testing.assert_array_equal(data.input_ids[0, :5], [2, 6, 5, 7, 3])
    np.testing.assert_array_equal(data.loss_mask[0, :5], [0, 1, 1, 1, 1])
    with pytest.raises(UserError, match="longer than the model's context of 3"):
        encode_records([{"id": "t", "text": "Ann was born?"}], tokenizer, max_length=3)
    ids, lengths = encode_prompts([{"prompt": "Where was Ann born?"}], tokenizer)
    np.testing.assert_array_equal(ids[0, :5], [2, 4, 5, 6, 7])
    assert lengths.tolist() == [5]


def test_sampler_deterministic_covers_and_resumes():
    sampler = EpochSampler(10, 4, seed=3)
    position = sampler.start()
    seen = []
    for _ in range(5):
        index, position = sampler.next_batch(position)
        assert len(index) == 4
        seen.append(index)
    flat = np.concatenate(seen)
    assert sorted(flat[:10].tolist()) == list(range(10))  # first epoch covers every item once
    assert sorted(flat[10:20].tolist()) == list(range(10))
    assert position == {"epoch": 2, "offset": 0}
    resumed, pos = [], {"epoch": 1, "offset": 2}  # the position after the third batch
    for _ in range(2):
        index, pos = sampler.next_batch(pos)
        resumed.append(index)
    np.testing.assert_array_equal(np.concatenate(resumed), np.concatenate(seen[3:]))
    assert not np.array_equal(EpochSampler(10, 4, seed=4).order(0), sampler.order(0))
    np.testing.assert_array_equal(EpochSampler(10, 4, seed=3, shuffle=False).order(5), np.arange(10))
    with pytest.raises(UserError):
        EpochSampler(0, 4, seed=0)


def test_curriculum_stages_order_and_resume():
    from unlearn_jax.data.sampler import CurriculumSampler

    memorization = tuple(float(v) for v in [5, 1, 9, 3, 7, 2, 8, 0, 6, 4])  # item 2 most memorized
    sampler = CurriculumSampler(memorization, batch_size=2, seed=0, stages=2, total_steps=6)
    assert sampler.stage_items(0).tolist() == [2, 6, 4, 8, 0]
    assert sorted(sampler.stage_items(1).tolist()) == list(range(10))
    position, batches, stages = sampler.start(), [], []
    for _ in range(6):
        index, position = sampler.next_batch(position)
        batches.append(index)
        stages.append(position["stage"])
    assert stages == [0, 0, 0, 1, 1, 1]
    assert set(np.concatenate(batches[:3]).tolist()) <= {2, 6, 4, 8, 0}  # stage 0: most memorized half only
    assert len(set(np.concatenate(batches[:3]).tolist())) == 5  # ...each once in its first epoch
    resumed, pos = [], {"stage": 0, "step": 2, "inner": {"epoch": 0, "offset": 4}}
    for _ in range(4):
        index, pos = sampler.next_batch(pos)
        resumed.append(index)
    np.testing.assert_array_equal(np.concatenate(resumed), np.concatenate(batches[2:]))
    reverse = CurriculumSampler(memorization, batch_size=2, seed=0, stages=2, total_steps=6, mode="reverse")
    assert reverse.stage_items(0).tolist() == [7, 1, 5, 3, 9]
    with pytest.raises(UserError, match="--stages"):
        CurriculumSampler(memorization, 2, 0, stages=11, total_steps=20)
    with pytest.raises(UserError, match="--curriculum"):
        CurriculumSampler(memorization, 2, 0, stages=2, total_steps=6, mode="random")


def test_rescoring_curriculum_reranks_at_stage_boundaries():
    from unlearn_jax.data.sampler import CurriculumSampler

    sampler = CurriculumSampler(tuple(float(v) for v in range(6)), batch_size=2, seed=0, stages=2, total_steps=4,
                                rescore=True)
    assert sampler.stage_items(0).tolist() == [5, 4, 3]
    calls = []

    def now():
        calls.append(1)
        return [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]  # the model now ranks the other way round

    position, seen = sampler.start(), []
    for _ in range(4):
        index, position = sampler.next_batch(position, now)
        seen.append(index)
    assert len(calls) == 1 and position["ranking"] == [0, 1, 2, 3, 4, 5]
    assert set(np.concatenate(seen[:2]).tolist()) == {3, 4, 5}
    resumed = sampler.next_batch({"stage": 1, "step": 3, "inner": {"epoch": 0, "offset": 2},
                                  "ranking": [0, 1, 2, 3, 4, 5]})[0]
    np.testing.assert_array_equal(resumed, seen[3])  # the saved ranking is reused: no rescoring on resume
