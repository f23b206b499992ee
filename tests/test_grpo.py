"GRPO beyond the chapter: the feedback out of TRL's loss mask, an update's direction, resuming, hostile answers, every task."
import json

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import example, given, settings, strategies as st

from sftrl.compute import TokenCount
from sftrl.grpo import (feedback_ids, grpo_prompts, grpo_run, grpo_trainer, play_revisions, steps_per_update,
                        train_grpo)
from sftrl.generate import encode
from sftrl.models import build_text_policy, build_tokenizer, load_policy, save_policy, task_texts
from sftrl.rl import rl_checkpoints, rl_log
from sftrl.sft import base_policy, sft_run
from sftrl.tasks import make_env, oracle_answer, start_episode

WRONG = '{"cards": ["2"], "number": [2], "formula": "2"}'


@pytest.fixture(scope='module')
def policy():
    return build_text_policy(build_tokenizer(task_texts(n=40), 400), 'smoke', seed=0)


@pytest.fixture(scope='module')
def init(policy, tmp_path_factory):
    return str(save_policy(policy, tmp_path_factory.mktemp('init') / 'policy'))


def expert_on_even_seeds(policy, run):
    "A scripted generator for `run`'s GP-L prompts: the expert's answer where the row's seed is even, a wrong formula elsewhere."
    tokenizer, env, experts = policy.tokenizer, make_env('gp-l', 'train'), {}
    for row in grpo_prompts('gp-l', run.updates * run.prompts, run.seed):
        obs, info = start_episode(env, 'gp-l', 'train', row['episode_seed'])
        experts[tuple(encode(policy, [{'messages': row['prompt']}])['input_ids'][0].tolist())] = oracle_answer('gp-l', obs, info)

    def generator(policy, sequences, pixel_values, temperature, row_seeds, max_new_tokens):
        texts = [next(text for ids, text in experts.items() if tuple(s[:len(ids)]) == ids) if seed % 2 == 0 else WRONG
                 for s, seed in zip(sequences, row_seeds)]
        answers = [tokenizer(t, add_special_tokens=False)['input_ids'] + [tokenizer.eos_token_id] for t in texts]
        return answers, TokenCount(sum(map(len, sequences)), 0, sum(map(len, answers)))
    return generator


def model_logprob(model, episode) -> float:
    "The summed log-probability of the episode's model tokens (mask 1) under `model` at temperature 1."
    ids = torch.tensor([episode.prompt_ids + episode.completion_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None])[:, 0]
    mask = torch.tensor([0] * (len(episode.prompt_ids) - 1) + episode.env_mask, dtype=torch.float32)
    return float((logp * mask).sum())


def test_the_loss_mask_is_the_model_tokens_and_nothing_else(policy, init, tmp_path):
    "TRL 1.16 turns the rollout's `env_mask` into the loss mask (its `tool_mask` × `completion_mask`): feedback tokens count 0."
    run = grpo_run('smoke', 'gp-l', init=init, updates=1, prompts=2, generations=4, viter=3, max_new_tokens=8)
    trainer = grpo_trainer(run, tmp_path, generator=expert_on_even_seeds(policy, run))
    trainer.model.train()
    inputs = [dict(row) for row in trainer.train_dataset.select(range(2)) for _ in range(run.generations)]
    out = trainer._generate_and_score_completions(inputs)
    episodes = trainer.rollout_func.last.episodes
    loss_mask = (out['completion_mask'] * out['tool_mask']).tolist()
    for row, e in zip(loss_mask, episodes):
        assert row == e.env_mask + [0] * (len(row) - len(e.env_mask))
    assert any(0 in e.env_mask for e in episodes) and any(e.solved for e in episodes)   # feedback present, some solved
    rewards = [sum(e.rewards) for e in episodes]
    groups = np.array(rewards).reshape(-1, run.generations)
    expected = (groups - groups.mean(1, keepdims=True)) / (groups.std(1, ddof=1, keepdims=True) + 1e-4)
    np.testing.assert_allclose(out['advantages'].numpy(), expected.ravel(), atol=1e-5)   # the verifier's return, normalised per group


def test_one_update_makes_the_better_episodes_likelier(policy, init, tmp_path):
    "Groups where some episodes solve the hand: after one update, above-average episodes gain log-probability, the others lose it."
    run = grpo_run('smoke', 'gp-l', init=init, updates=1, prompts=2, generations=4, viter=2, max_new_tokens=8, learning_rate=3e-3)
    trainer = grpo_trainer(run, tmp_path, generator=expert_on_even_seeds(policy, run))
    trainer.train()
    episodes, before = trainer.rollout_func.last.episodes, load_policy(init).model
    returns = np.array([sum(e.rewards) for e in episodes]).reshape(-1, run.generations)
    advantage = (returns - returns.mean(1, keepdims=True)).ravel()
    change = np.array([model_logprob(trainer.model, e) - model_logprob(before, e) for e in episodes])
    assert (advantage != 0).any()
    assert change[advantage > 0].mean() > 0 > change[advantage < 0].mean(), (advantage, change)


def test_a_run_killed_after_an_update_resumes_to_the_same_weights_logs_and_compute(policy, init, tmp_path):
    run = grpo_run('smoke', 'gp-l', init=init, prompts=2, generations=4, viter=2, max_new_tokens=8, learning_rate=3e-3)
    generator = expert_on_even_seeds(policy, run)
    straight = train_grpo(run, root=tmp_path / 'a', progress=False, generator=generator)
    train_grpo(run, root=tmp_path / 'b', progress=False, stop_after=1, generator=generator)
    assert len(rl_log(tmp_path / 'b' / straight.name)) == 1 and not (tmp_path / 'b' / straight.name / 'done').exists()
    resumed = train_grpo(run, root=tmp_path / 'b', progress=False, generator=generator)
    pd.testing.assert_frame_equal(rl_log(straight), rl_log(resumed))
    pd.testing.assert_frame_equal(rl_checkpoints(straight).drop(columns='path'), rl_checkpoints(resumed).drop(columns='path'))
    weights = [load_policy(f / 'checkpoint-2').model.state_dict() for f in (straight, resumed)]
    start = load_policy(init).model.state_dict()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], start[k]) for k in start)                 # the update did move the policy
    log = rl_log(straight)
    assert (log.frac_reward_zero_std < 1).all() and (log.success_rate > 0).all()
    assert json.loads((straight / 'run.json').read_text())['generations'] == 4


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(max_size=30), min_size=1, max_size=5))
@example(['<|eos|>', 'a<|user|>b<|assistant|>', '', WRONG, '\ud7ff' * 3])
def test_any_answers_get_the_verifiers_rewards_and_stay_the_models_tokens(policy, answers):
    "Hostile answers (any text, special-token strings included): rewards as stepped by hand, model tokens exactly as emitted."
    tokenizer = policy.tokenizer
    emitted = [tokenizer(a, add_special_tokens=False)['input_ids'] + [tokenizer.eos_token_id] for a in answers]

    def scripted(policy, sequences, pixel_values, temperature, row_seeds, max_new_tokens):
        ids = emitted[min(scripted.turn, len(emitted) - 1)]; scripted.turn += 1
        return [ids], TokenCount(len(sequences[0]), 0, len(ids))
    scripted.turn = 0
    env, by_hand = make_env('gp-l', 'train'), make_env('gp-l', 'train')
    start = start_episode(env, 'gp-l', 'train', 7)
    start_episode(by_hand, 'gp-l', 'train', 7)
    [episode], _ = play_revisions(policy, [env], [start], 1.0, seed=0, generator=scripted)
    played = [emitted[min(k, len(emitted) - 1)] for k in range(len(episode.rewards))]
    assert episode.rewards == [by_hand.step(tokenizer.decode(ids, skip_special_tokens=True))[1] for ids in played]
    assert [t for t, m in zip(episode.completion_ids, episode.env_mask) if m] == sum(played, [])
    assert episode.done and len(episode.rewards) <= 5


def test_a_truncated_answer_gets_its_end_token_from_the_template_masked(policy):
    messages = [{'role': 'user', 'content': 'Cards: 2 3 4 1'}]
    tokenizer = policy.tokenizer
    cut = feedback_ids(tokenizer, messages, 'abc', tokenizer('abc')['input_ids'], 'You failed.')
    assert cut[0] == tokenizer.eos_token_id and tokenizer.decode(cut[1:]) == '<|user|>You failed.<|assistant|>'
    with pytest.raises(ValueError, match='does not render the answer verbatim'):
        tokenizer_trimming = build_tokenizer(task_texts(n=5), 300)
        tokenizer_trimming.chat_template = tokenizer.chat_template.replace("m['content'] }}", "m['content'] | trim }}")
        feedback_ids(tokenizer_trimming, messages, ' abc ', [], 'You failed.')


@pytest.mark.parametrize('task', ['virl-l', 'gp-vl', 'virl-vl'])
def test_every_task_trains_an_update_and_logs_it(task, init, tmp_path):
    "V-IRL's positions and the vision tasks' images through TRL: one smoke update each, logged as PPO logs."
    start = init if task == 'virl-l' else str(base_policy(sft_run('smoke', task)).model.name_or_path)
    run = grpo_run('smoke', task, init=start, updates=1, prompts=2, generations=2, minibatch=4, viter=1, max_new_tokens=6,
                   checkpoints=1)
    folder = train_grpo(run, root=tmp_path, progress=False)
    log, table = rl_log(folder), rl_checkpoints(folder)
    assert list(log['update']) == [1] and log.episodes[0] == 4 and list(table['update']) == [1]
    assert log.trl_completion_tokens[0] == log.model_tokens[0] and table.flops[0] > 0
    assert steps_per_update(run) == 1


def test_the_study_registry_gives_a_grpo_series_in_ppo_s_table(init, tmp_path):
    from sftrl import study
    kwargs = dict(updates=1, prompts=2, generations=2, minibatch=4, viter=2, max_new_tokens=8, checkpoints=1)
    grpo = study.rl_arms('gp-l', 'smoke', init, root=tmp_path, trainer='grpo', **kwargs)
    ppo = study.rl_arms('gp-l', 'smoke', init, root=tmp_path, updates=1, steps=4, n_envs=2, minibatch=2, ppo_epochs=1,
                        max_new_tokens=8, checkpoints=1)
    assert list(grpo.columns) == list(ppo.columns) and list(grpo.arm) == ['Init', 'GRPO'] and list(ppo.arm) == ['Init', 'RL']
    assert grpo.gflops.iloc[1] > grpo.gflops.iloc[0] == ppo.gflops.iloc[0]    # the same Init, then GRPO's compute on top
    assert (tmp_path / 'smoke' / 'grpo').is_dir()
    with pytest.raises(ValueError, match="trainer must be 'ppo' or 'grpo'"):
        study.rl_arms('gp-l', 'smoke', init, root=tmp_path, trainer='dpo')
