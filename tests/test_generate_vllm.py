"""The vLLM generation backend on a real engine (sftrl.generate.VLLMGenerator): runs only where vllm and a GPU are
present, and is skipped everywhere else (the chapter's checks drive the backend against a stand-in for vLLM's API).
The models are the `tiny` size: vLLM's attention kernels take head sizes of 32 and up, the smoke size's is 16."""
import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec('vllm') is None or not torch.cuda.is_available(),
                                reason='the vLLM backend needs vllm and a GPU')

from sftrl.generate import generate, generator
from sftrl.models import build_text_policy, build_tokenizer, load_policy, task_texts
from sftrl.tasks import make_env


@pytest.fixture(scope='module')
def saved_policy(tmp_path_factory):
    folder = tmp_path_factory.mktemp('tiny')
    policy = build_text_policy(build_tokenizer(task_texts(n=200), 512), 'tiny', seed=0)
    policy.model.save_pretrained(folder); policy.tokenizer.save_pretrained(folder)
    return load_policy(folder)


def _observations(n=6):
    env = make_env('gp-l', 'id')
    return [{'messages': env.reset(seed=s)[1]['messages']} for s in range(n)]


def test_greedy_answers_match_the_transformers_backend(saved_policy):
    batch = _observations()
    engine = generator(saved_policy, 'vllm', dtype='float32', enforce_eager=True)
    ours, theirs = generate(saved_policy, batch, max_new_tokens=16), engine(saved_policy, batch, max_new_tokens=16)
    assert theirs.prompt_ids == ours.prompt_ids
    agree = sum(a[:8] == b[:8] for a, b in zip(ours.answer_ids, theirs.answer_ids))
    assert agree >= len(batch) - 1, (ours.answer_ids, theirs.answer_ids)   # float kernels may flip one near-tie


def test_sampling_is_per_row_and_sync_moves_the_engine(saved_policy):
    policy, batch = load_policy(saved_policy.model.name_or_path), _observations(4)   # a copy: this test changes its weights
    engine = generator(policy, 'vllm', dtype='float32', enforce_eager=True)
    alone = engine(policy, batch[:1], temperature=1.0, seed=3, max_new_tokens=16).answer_ids[0]
    assert engine(policy, batch, temperature=1.0, seed=3, max_new_tokens=16).answer_ids[0] == alone
    before = engine(policy, batch, max_new_tokens=8).answer_ids
    with torch.no_grad():
        for p in policy.model.parameters(): p.add_(torch.randn_like(p) * 0.5)
    engine.sync(policy.model)
    after = engine(policy, batch, max_new_tokens=8).answer_ids
    assert after != before
    assert sum(a[:4] == b[:4] for a, b in zip(generate(policy, batch, max_new_tokens=8).answer_ids, after)) >= len(batch) - 1
