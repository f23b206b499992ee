"PPO beyond the chapter: GAE against a per-episode reference, the loss against the textbook, one update's direction, logs, options."
import json
import math
from dataclasses import astuple, replace

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from hypothesis import given, settings, strategies as st

from sftrl.models import build_text_policy, build_tokenizer, load_policy, save_policy, task_texts
from sftrl.rl import (PAPER_RL, RATIOS, RL_PRESETS, ActorCritic, Rollout, RLRun, Turn, ValueHead, gae, group_advantages, hidden_size,
                      ppo_loss, ppo_update, remember, rl_checkpoints, rl_log, rl_run, score, train_rl)
from sftrl.compute import TokenCount


@pytest.fixture(scope='module')
def policy():
    return build_text_policy(build_tokenizer(task_texts(n=40), 400), 'smoke', seed=0)


def _prompt_and_two_answers(tok):
    "A GP-L-like prompt and two answers to it, a right and a wrong formula, as ids ending with end-of-sequence."
    prompt = tok.apply_chat_template([{'role': 'user', 'content': 'Cards: 2 3 4 1'}], add_generation_prompt=True,
                                     tokenize=True, return_dict=True)['input_ids']
    return prompt, [tok(t)['input_ids'] + [tok.eos_token_id] for t in ('{"formula": "2*3*4*1=24"}', '{"formula": "2+3+4+1=24"}')]


def reference_gae(rewards, values, dones, bootstrap, gamma, lam):
    "The textbook recursion over one environment's turns, written out separately from `gae`."
    n, adv = len(rewards), [0.0] * len(rewards)
    following = 0.0
    for t in reversed(range(n)):
        next_value = bootstrap if t == n - 1 else values[t + 1]
        nonterminal = 0.0 if dones[t] else 1.0
        delta = rewards[t] + gamma * next_value * nonterminal - values[t]
        following = delta + gamma * lam * nonterminal * following
        adv[t] = following
    return adv


turn_lists = st.lists(st.tuples(st.integers(0, 2), st.floats(-5, 5), st.floats(-3, 3), st.booleans()), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(turn_lists, st.lists(st.floats(-3, 3), min_size=3, max_size=3), st.floats(0.5, 1.0), st.floats(0.5, 1.0))
def test_gae_on_interleaved_environments_equals_the_per_environment_recursion(rows, bootstrap, gamma, lam):
    turns = [Turn([], [], [], None, 0.0, v, r, d, env=e) for e, r, v, d in rows]
    advantages, returns = gae(turns, bootstrap, gamma, lam)
    for env in range(3):
        idx = [i for i, t in enumerate(turns) if t.env == env]
        if not idx: continue
        expected = reference_gae([turns[i].reward for i in idx], [turns[i].value for i in idx],
                                 [turns[i].done for i in idx], bootstrap[env], gamma, lam)
        np.testing.assert_allclose(advantages[idx], expected, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(returns[idx], np.array(expected) + [turns[i].value for i in idx], atol=1e-9)


def test_gae_with_gamma_and_lambda_one_is_the_monte_carlo_return_minus_the_value():
    rewards, values = [-3.0, -2.0, 5.0], [0.4, -0.1, 2.0]
    turns = [Turn([], [], [], None, 0.0, v, r, k == 2) for k, (r, v) in enumerate(zip(rewards, values))]
    advantages, returns = gae(turns, [123.0], 1.0, 1.0)
    np.testing.assert_allclose(returns, [0.0, 3.0, 5.0], atol=1e-12)
    np.testing.assert_allclose(advantages, np.array([0.0, 3.0, 5.0]) - values, atol=1e-12)


def test_a_truncated_turn_of_the_official_budget_bootstraps_into_the_next_episode():
    "Two episodes on one environment; the first ends by truncation: its last turn's mask stays 1 (official), unlike a done turn's."
    values, rewards = [0.5, 0.2, 1.0, 2.0], [-1.0, -1.0, -3.0, 5.0]
    make = lambda truncated: [Turn([], [], [], None, 0.0, v, r, k in (1, 3), truncated=truncated and k == 1)
                              for k, (r, v) in enumerate(zip(rewards, values))]
    cut, through = gae(make(False), [0.0], 0.9, 0.95)[0], gae(make(True), [0.0], 0.9, 0.95)[0]
    np.testing.assert_allclose(cut[1], -1.0 - 0.2)
    np.testing.assert_allclose(through[1], -1.0 + 0.9 * 1.0 - 0.2 + 0.9 * 0.95 * through[2])
    np.testing.assert_allclose(through[2:], cut[2:])   # the second episode does not look back


def test_accumulated_single_turn_minibatches_take_the_step_of_one_large_minibatch(policy):
    "minibatch 1 × accumulation 2 gives the same weights as minibatch 2, with one optimizer step per 2 turns."
    tok = policy.tokenizer
    prompt, answers = _prompt_and_two_answers(tok)
    weights = {}
    for minibatch, accumulation in ((2, 1), (1, 2)):
        torch.manual_seed(0)
        head, model = ValueHead(hidden_size(policy.model)), build_text_policy(tok, 'smoke', seed=0).model
        turns = [Turn(prompt, a, [1.0] * len(a), None, 0.0, 0.0, r, True, env=k) for k, (a, r) in enumerate(zip(answers, (5.0, -3.0)))]
        remember(ActorCritic(model, head), turns, 0.2, tok.pad_token_id)
        run = rl_run('smoke', 'gp-l', init='unused', minibatch=minibatch, accumulation=accumulation, ppo_epochs=2, learning_rate=1e-4,
                     temperature=0.2)
        optimizer = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=run.learning_rate, eps=1e-7)
        ppo_update(ActorCritic(model, head), optimizer, Accelerator(cpu=True, gradient_accumulation_steps=accumulation),
                   Rollout(turns, [0.0, 0.0], [], TokenCount()),
                   run, tok.pad_token_id, np.random.default_rng(0))
        assert optimizer.state[next(iter(model.parameters()))]['step'].item() == 2   # one step an epoch either way
        weights[minibatch] = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.testing.assert_close(weights[1], weights[2], atol=1e-6, rtol=1e-5)


def test_an_update_refuses_an_accelerator_that_accumulates_otherwise(policy):
    run = rl_run('smoke', 'gp-l', init='unused', minibatch=1, accumulation=2)
    with pytest.raises(ValueError, match='accelerator accumulates 1 minibatches, the run 2'):
        ppo_update(None, None, Accelerator(cpu=True), Rollout([], [], [], TokenCount()), run, 0, np.random.default_rng(0))


def test_the_paper_preset_accumulates_and_plays_the_official_budget():
    run = rl_run('paper', 'gp-l', init='x')
    assert (run.minibatch, run.accumulation, run.official_budget) == (1, 128, True)
    assert 256 // run.minibatch // run.accumulation * run.ppo_epochs == 8   # optimizer steps an update, as the official code
    assert not rl_run('tiny', 'gp-l', init='x').official_budget


def test_the_paper_gae_values_discount_a_late_success():
    "γ 0.9, λ 0.95, zero values: a success on the 3rd try is worth 0.855² · 5 to the first try, plus its own −3."
    turns = [Turn([], [], [], None, 0.0, 0.0, r, d) for r, d in ((-3.0, False), (-3.0, False), (5.0, True))]
    advantages, _ = gae(turns, [0.0])
    np.testing.assert_allclose(advantages, [-3 + 0.855 * (-3 + 0.855 * 5), -3 + 0.855 * 5, 5.0])


def test_ppo_loss_equals_the_textbook_clipped_objective():
    g = torch.Generator().manual_seed(0)
    old = torch.randn(64, generator=g, dtype=torch.float64)
    new = old + 0.3 * torch.randn(64, generator=g, dtype=torch.float64)       # ratios within e^±1: no fallback
    adv, value, old_value, ret = (torch.randn(64, generator=g, dtype=torch.float64) for _ in range(4))
    loss, parts = ppo_loss(new, old, adv, value, old_value, ret, clip=0.2, value_coef=0.7, value_clip=0.2)
    ratio = torch.exp(new - old)
    policy = -torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
    v_clip = old_value + (value - old_value).clamp(-0.2, 0.2)
    value_loss = 0.5 * torch.maximum((value - ret) ** 2, (v_clip - ret) ** 2).mean()
    assert math.isclose(parts['policy_loss'], policy.item(), rel_tol=1e-12)
    assert math.isclose(parts['value_loss'], value_loss.item(), rel_tol=1e-12)
    assert math.isclose(loss.item(), (policy + 0.7 * value_loss).item(), rel_tol=1e-12)
    assert math.isclose(parts['clip_fraction'], ((ratio - 1).abs() > 0.2).double().mean().item())
    assert parts['approx_kl'] >= 0


def test_a_clipped_turn_gets_no_gradient_and_an_unclipped_one_does():
    new = torch.tensor([math.log(1.5), math.log(1.05)], requires_grad=True)
    zeros = torch.zeros(2)
    loss, _ = ppo_loss(new, zeros, torch.ones(2), zeros, zeros, zeros)
    loss.backward()
    assert new.grad[0].item() == 0.0 and new.grad[1].item() < 0      # past 1 + clip: nothing left to push


def test_the_ratio_fallback_uses_the_clipped_surrogate_for_the_whole_minibatch():
    "One ratio above 10 and the minibatch drops min(): a turn with ratio 1.5 and advantage −1 counts −1.1, not −1.5."
    new = torch.tensor([math.log(11.0), math.log(1.5)])
    zeros, advantages = torch.zeros(2), torch.tensor([1.0, -1.0])
    _, parts = ppo_loss(new, zeros, advantages, zeros, zeros, zeros)
    assert math.isclose(parts['policy_loss'], -(1.1 * 1 + 1.1 * -1) / 2, abs_tol=1e-6)
    _, below = ppo_loss(new, zeros, advantages, zeros, zeros, zeros, ratio_fallback=100.0)
    assert math.isclose(below['policy_loss'], -(1.1 * 1 + 1.5 * -1) / 2, rel_tol=1e-6)   # min(): the pessimistic 1.5 · −1


@pytest.mark.parametrize('ratio', RATIOS)
def test_one_update_moves_probability_to_the_rewarded_answer(policy, ratio):
    "Two answers to one prompt, +5 and −3: after one PPO update, whichever ratio is clipped, the rewarded one is likelier, the other less likely."
    tok = policy.tokenizer
    prompt, answers = _prompt_and_two_answers(tok)
    torch.manual_seed(0)
    head = ValueHead(hidden_size(policy.model))
    model = build_text_policy(tok, 'smoke', seed=0).model      # a copy: the module fixture stays untouched
    turns = [Turn(prompt, a, [1.0] * len(a), None, 0.0, 0.0, reward, True, env=k) for k, (a, reward) in enumerate(zip(answers, (5.0, -3.0)))]
    before = torch.tensor([t.logprob for t in remember(ActorCritic(model, head), turns, 0.2, tok.pad_token_id)])
    run = rl_run('smoke', 'gp-l', init='unused', minibatch=2, accumulation=1, ppo_epochs=4, learning_rate=1e-4, ratio=ratio, temperature=0.2)
    optimizer = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=run.learning_rate, eps=1e-7)
    stats = ppo_update(ActorCritic(model, head), optimizer, Accelerator(cpu=True), Rollout(turns, [0.0, 0.0], [], TokenCount()),
                       run, tok.pad_token_id, np.random.default_rng(0))
    with torch.no_grad():
        after = score(ActorCritic(model, head), turns, 0.2, tok.pad_token_id)[0]
    assert after[0] > before[0] and after[1] < before[1], (before, after)
    assert stats['trained'].total == 4 * sum(len(prompt) + len(a) for a in answers)    # 4 epochs over both turns
    assert {'policy_loss', 'value_loss', 'clip_fraction', 'approx_kl', 'turn_kl', 'entropy', 'explained_variance'} <= set(stats)


def test_a_run_logs_what_the_issue_asks_and_keeps_checkpoints_along_compute(tmp_path, policy):
    init = save_policy(policy, tmp_path / 'init')
    run = rl_run('smoke', 'gp-l', init=str(init), updates=3, steps=6, n_envs=3, minibatch=3, ppo_epochs=1,
                 max_new_tokens=8, checkpoints=3, kl_coef=0.1, entropy_coef=0.01, viter=2)
    folder = train_rl(run, root=tmp_path / 'runs', progress=False)
    log = rl_log(folder)
    assert list(log['update']) == [1, 2, 3]
    for column in ('mean_reward', 'success_rate', 'episode_turns', 'approx_kl', 'turn_kl', 'kl_init_id', 'kl_init_ood_rule', 'entropy',
                   'clip_fraction', 'value_loss', 'explained_variance', 'learning_rate', 'flops', 'paper_flops', 'buffer_turns'):
        assert column in log and log[column].notna().any(), column
    assert (log.learning_rate.diff().dropna() < 0).all()               # cosine decay, stepped once per update
    table = rl_checkpoints(folder)
    assert list(table['update']) == [1, 2, 3] and table.flops.is_monotonic_increasing
    assert (table.d_init == 0).all()                                  # a checkpoint without compute.json starts from 0 tokens
    row = table.iloc[-1]
    assert math.isclose(row.paper_flops, 6 * row.n_params * row.d_rl + 2 * row.n_params * 6.0 * row.d_rl)
    assert json.loads((folder / 'run.json').read_text())['kl_coef'] == 0.1
    assert train_rl(run, root=tmp_path / 'runs', progress=False) == folder      # cached: nothing trains again
    assert len(rl_log(folder)) == 3


def test_the_value_head_learns_at_its_own_rate(tmp_path, policy):
    "With the policy's learning rate at zero and the value head's at 1e-2, one update changes the head and no policy weight."
    init = save_policy(policy, tmp_path / 'init')
    run = rl_run('smoke', 'gp-l', init=str(init), updates=1, steps=4, n_envs=2, minibatch=2, ppo_epochs=1, max_new_tokens=8,
                 learning_rate=0.0, lr_min=0.0, cosine_updates=100, value_learning_rate=1e-2, value_clip=None, viter=2)
    folder = train_rl(run, root=tmp_path / 'runs', progress=False)
    torch.manual_seed(run.seed)
    fresh = ValueHead(hidden_size(policy.model)).state_dict()         # the head as `train_rl` seeds it
    trained = torch.load(folder / 'state' / 'trainer.pt', weights_only=False)
    assert trained['optimizer']['param_groups'][1]['lr'] > 0
    assert any(not torch.equal(fresh[k], v) for k, v in trained['value_head'].items())
    after = load_policy(folder / 'state' / 'policy').model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in policy.model.state_dict().items())


@pytest.mark.slow
def test_rl_raises_in_distribution_success_from_an_sft_checkpoint(tmp_path):
    """The learning test (about an hour on 1 core): RL `tiny` as it was before the tiny recipe (the official turn ratio at
    temperature 0.2, 4 epochs, a step every 16 turns; 5 updates of 128 turns, learning rate 1e-6, the paper's cosine period of 100 updates)
    from the last SFT `tiny` checkpoint of GP-L; greedy ID success on the same 200 evaluation hands before and after, compared pairwise. Measured (2026-12-02): 38.0 % -> 40.0 %, +2.0 +- 1.0 points
    (4 hands gained, none lost): just over the 2-standard-error bar, so a small, marginal gain. Seed 1 (2026-12-03):
    the same, 38.0 % -> 40.0 %, 4 gained, none lost."""
    from sftrl import study
    from sftrl.evaluate import evaluate
    from sftrl.generate import model_policy
    from sftrl.models import load_policy
    from sftrl.runs import checkpoint_table
    torch.set_num_threads(1)
    init = checkpoint_table(study.sft('gp-l', 'tiny')).path.iloc[-1]
    run = rl_run('tiny', 'gp-l', init=init, updates=5, steps=128, n_envs=8, max_new_tokens=96, checkpoints=1,   # the preset as measured:
                 learning_rate=1e-6, temperature=0.2, ratio='turn', minibatch=16, accumulation=1, ppo_epochs=4)   # before the tiny recipe
    folder = train_rl(run, root=tmp_path, progress=False)
    success = {}
    for name, path in (('before', init), ('after', rl_checkpoints(folder).path.iloc[-1])):
        _, episodes = evaluate(model_policy(load_policy(path), max_new_tokens=256), 'gp-l', 'id', n=200, seed=0, progress=False)
        success[name] = episodes.sort_values('sample_id')['success'].to_numpy(dtype=float)
    gain = success['after'] - success['before']            # the same hands: a paired difference
    print({k: v.mean() for k, v in success.items()}, 'gain', gain.mean(), '±', gain.std(ddof=1) / np.sqrt(len(gain)))
    print(rl_log(folder)[['update', 'mean_reward', 'success_rate', 'episode_turns', 'clip_fraction', 'approx_kl']].to_string())
    assert gain.mean() > 2 * gain.std(ddof=1) / np.sqrt(len(gain))


OFFICIAL_PPO = dict(steps=256, minibatch=1, accumulation=128, ppo_epochs=4, gamma=0.9, lam=0.95, clip=0.1, value_coef=0.5,
                    value_clip=0.1, value_learning_rate=None, max_grad_norm=0.01, ratio_fallback=10.0, kl_coef=0.0, entropy_coef=0.0,
                    lr_min=1e-9, temperature=0.2, max_new_tokens=512, thought_weight=0.5, skip_first=2, official_budget=True,
                    viter=None, ratio='turn', group_size=None)


def test_the_paper_preset_keeps_the_official_ppo_values():
    "PAPER.md §3: the official PPO settings, and the per-task learning rate, cosine period and updates (PAPER_RL)."
    from sftrl.rl import PaperRL
    assert PAPER_RL == {'gp-l': PaperRL(1e-6, 100, 20), 'gp-vl': PaperRL(1e-6, 100, 20), 'virl-l': PaperRL(1e-6, 20, 15),
                        'virl-vl': PaperRL(1e-7, 20, 15)}
    for task, paper in PAPER_RL.items():
        run = rl_run('paper', task, init='x')
        assert {k: getattr(run, k) for k in OFFICIAL_PPO} == OFFICIAL_PPO, task
        assert (run.learning_rate, run.cosine_updates, run.updates, run.verifier) == (*astuple(paper), 'official')
    assert {k: getattr(RL_PRESETS['paper'], k) for k in OFFICIAL_PPO} == OFFICIAL_PPO
    # the preset shows what it runs: GeneralPoints' learning rate, cosine period and updates
    assert rl_run('paper', 'gp-l', init='x') == replace(RL_PRESETS['paper'], task='gp-l', init='x', verifier='official')


def test_the_tiny_preset_is_the_documented_recipe():
    from sftrl.rl import TINY_BASELINES, TINY_CHOSEN_RATES, TINY_LEARNING_RATES
    assert TINY_BASELINES == {'gp-l': 4, 'gp-vl': 4, 'virl-l': 4, 'virl-vl': 4}   # every task: the group baseline (the RL chapter's *A second look*)
    for task in PAPER_RL:
        run = rl_run('tiny', task, init='x')
        assert (run.ratio, run.temperature, run.ppo_epochs, run.thought_weight) == ('token', 1.0, 2, 0.5)
        assert run.turns_per_step >= 128 and run.steps % run.turns_per_step == 0 and run.updates * run.steps >= 3000
        assert TINY_LEARNING_RATES == (1e-5, 3e-5, 1e-4) and run.learning_rate == TINY_CHOSEN_RATES.get(task, 3e-5)   # the rule's, or 3e-5
        assert (run.gamma, run.lam, run.clip, run.kl_coef, run.group_size) == (0.9, 0.95, 0.1, 0.0, TINY_BASELINES.get(task))
        assert run.cosine_updates == PAPER_RL[task].cosine_updates


def test_bad_options_say_what_to_choose():
    with pytest.raises(ValueError, match="ratio must be one of"):
        RLRun(ratio='word')
    with pytest.raises(ValueError, match='group_size must be >= 2 and divide n_envs'):
        rl_run('smoke', 'gp-l', init='x', group_size=3)
    with pytest.raises(ValueError, match='group_size must be >= 2'):
        RLRun(group_size=1)
    bare = Turn([1, 2], [3, 4], [1.0, 1.0], None, 0.0, 0.0)                  # never scored: no old log-probabilities
    with pytest.raises(ValueError, match='call `remember` on them'):
        ppo_update(None, None, Accelerator(cpu=True), Rollout([bare], [0.0], [], TokenCount()), rl_run('smoke', 'gp-l', accumulation=1), 0,
                   np.random.default_rng(0))
    with pytest.raises(ValueError, match='needs per-token'):
        ppo_loss(torch.zeros(2), torch.zeros(2), torch.ones(2), torch.zeros(2), torch.zeros(2), torch.zeros(2), ratio='sequence_mean')


def _tokens(seed, turns=5, width=7):
    g = torch.Generator().manual_seed(seed)
    new, old = (0.3 * torch.randn(turns, width, generator=g, dtype=torch.float64) for _ in range(2))
    weights = torch.where(torch.rand(turns, width, generator=g, dtype=torch.float64) < 0.4, 0.5, 1.0)
    for row in range(turns): weights[row, width - row:] = 0.0            # answers of different lengths, zero-padded
    weights[0, :] = 1.0
    adv, value, old_value, returns = (torch.randn(turns, generator=g, dtype=torch.float64) for _ in range(4))
    return new, old, weights, adv, value, old_value, returns


@pytest.mark.parametrize('seed', range(3))
def test_the_per_token_and_sequence_mean_losses_equal_their_textbook_formulas(seed):
    new, old, w, adv, value, old_value, returns = _tokens(seed)
    delta = (new - old) * (w > 0)
    ratio = torch.exp(delta)
    surrogate = torch.minimum(ratio * adv[:, None], ratio.clamp(0.8, 1.2) * adv[:, None])
    token = -((surrogate * w).sum(-1) / w.sum(-1)).mean()
    _, parts = ppo_loss(new, old, adv, value, old_value, returns, clip=0.2, weights=w, ratio='token')
    assert math.isclose(parts['policy_loss'], token.item(), rel_tol=1e-12)
    assert math.isclose(parts['clip_fraction'], (((ratio - 1).abs() > 0.2) & (w > 0)).sum().item() / (w > 0).sum().item())
    k3 = (torch.exp(delta) - 1 - delta)[w > 0].mean()
    assert math.isclose(parts['approx_kl'], k3.item(), rel_tol=1e-9)
    turn = torch.exp((delta * w).sum(-1) / w.sum(-1))                     # GSPO: the turn's ratio per (weighted) token
    sequence = -torch.minimum(turn * adv, turn.clamp(0.8, 1.2) * adv).mean()
    _, parts = ppo_loss(new, old, adv, value, old_value, returns, clip=0.2, weights=w, ratio='sequence_mean')
    assert math.isclose(parts['policy_loss'], sequence.item(), rel_tol=1e-12)


def test_the_per_token_fallback_drops_only_the_runaway_tokens_unclipped_term():
    "One token's ratio is 20 with advantage −1: it counts as the clipped −1.1 (not −20); its neighbour, ratio 1.05, as itself."
    new = torch.tensor([[math.log(20.0), math.log(1.05)]], dtype=torch.float64)
    old, w = torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    _, parts = ppo_loss(new, old, -torch.ones(1, dtype=torch.float64), zero, zero, zero, weights=w, ratio='token')
    assert math.isclose(parts['policy_loss'], -(-1.1 - 1.05) / 2, rel_tol=1e-9)


episodes = st.lists(st.tuples(st.integers(0, 2), st.lists(st.floats(-5, 5), min_size=1, max_size=5)), min_size=1, max_size=8)


@settings(max_examples=100, deadline=None)
@given(episodes)
def test_group_advantages_center_each_hand_at_each_place(played):
    "Returns are the discounted rewards-to-go of each episode; the advantages at one place of one hand's episodes sum to 0."
    turns = [Turn([], [], [], None, 0.0, 0.0, r, k == len(rewards) - 1, hand=hand, episode=e)
             for e, (hand, rewards) in enumerate(played) for k, r in enumerate(rewards)]
    advantages, returns = group_advantages(turns, 0.9)
    i = 0
    for e, (hand, rewards) in enumerate(played):
        expected = [sum(0.9 ** j * r for j, r in enumerate(rewards[k:])) for k in range(len(rewards))]
        np.testing.assert_allclose(returns[i:i + len(rewards)], expected, atol=1e-9)
        i += len(rewards)
    place = [k for _, rewards in played for k in range(len(rewards))]
    for key in {(t.hand, p) for t, p in zip(turns, place)}:
        idx = [j for j, (t, p) in enumerate(zip(turns, place)) if (t.hand, p) == key]
        assert abs(advantages[idx].sum()) < 1e-9


def test_a_group_baseline_run_ends_every_episode_and_leaves_the_critic_alone(tmp_path, policy):
    init = save_policy(policy, tmp_path / 'init')
    run = rl_run('smoke', 'gp-l', init=str(init), updates=1, steps=4, n_envs=4, minibatch=2, ppo_epochs=1, max_new_tokens=8,
                 viter=2, group_size=2, kl_probes=0)
    folder = train_rl(run, root=tmp_path / 'runs', progress=False)
    log = rl_log(folder)
    assert log.buffer_turns.iloc[0] == 8 and log.episodes.iloc[0] == 4 and log.explained_variance.isna().all()
    torch.manual_seed(run.seed)
    fresh = ValueHead(hidden_size(policy.model)).state_dict()
    trained = torch.load(folder / 'state' / 'trainer.pt', weights_only=False)['value_head']
    assert all(torch.equal(fresh[k], v) for k, v in trained.items())          # no value loss: the head keeps its weights
    assert 'kl_init_id' not in log and not (folder / 'kl_probes.pt').exists()


def test_a_group_baseline_update_prefers_the_episode_that_solved_the_hand_sooner(policy):
    "Each hand played twice: the even batch row answers as the expert, the odd one a wrong formula. First tries that solved gain probability, the wrong first tries lose it."
    from sftrl.generate import Generation, encode
    from sftrl.models import Policy
    from sftrl.rl import collect
    from sftrl.tasks import oracle_answer
    def alternate(policy, batch, temperature=0.0, seed=0, max_new_tokens=256):
        texts = [oracle_answer('gp-l', {}, item['info']) if k % 2 == 0 else '{"formula": "1+1=24"}' for k, item in enumerate(batch)]
        prompts = [encode(policy, [item])['input_ids'][0].tolist() for item in batch]
        answers = [policy.tokenizer(t)['input_ids'] + [policy.tokenizer.eos_token_id] for t in texts]
        return Generation(texts, prompts, answers, TokenCount())
    torch.manual_seed(0)
    model, head = build_text_policy(policy.tokenizer, 'smoke', seed=0).model, ValueHead(hidden_size(policy.model))
    actor_critic = ActorCritic(model, head)
    rollout = collect(Policy(model, policy.tokenizer, None, 'text'), head, 'gp-l', steps=4, n_envs=4, seed=0, temperature=0.2, generator=alternate, group_size=2)
    first = [t for t in rollout.turns if t.env % 2 == 0 or t.reward < 0][:4]          # the first tries: two right, two wrong
    assert sorted(t.success for t in first) == [False, False, True, True]
    run = rl_run('smoke', 'gp-l', init='unused', minibatch=len(rollout.turns), accumulation=1, ppo_epochs=4, learning_rate=1e-4,
                 temperature=0.2, group_size=2)
    before = score(actor_critic, first, 0.2, policy.tokenizer.pad_token_id)[0].detach()
    optimizer = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=run.learning_rate, eps=1e-7)
    ppo_update(actor_critic, optimizer, Accelerator(cpu=True), rollout, run, policy.tokenizer.pad_token_id, np.random.default_rng(0))
    after = score(actor_critic, first, 0.2, policy.tokenizer.pad_token_id)[0].detach()
    for t, b, a in zip(first, before, after):
        assert (a > b) == t.success, (t.success, b, a)


@pytest.mark.parametrize('ratio,group_size', [('turn', None), ('token', 2)])
def test_a_packed_update_is_the_per_turn_update(policy, ratio, group_size):
    "On the same rollout and the same minibatch (the whole buffer), episode-packed scoring gives the per-turn update's statistics and weights, to 1e-5."
    from sftrl.rl import collect
    tok, results = policy.tokenizer, {}
    rollout = collect(policy, ValueHead(hidden_size(policy.model)), 'gp-l', steps=8, n_envs=2, seed=2, temperature=1.0,
                      max_new_tokens=10, group_size=group_size)
    run = rl_run('smoke', 'gp-l', init='unused', minibatch=len(rollout.turns), accumulation=1, ppo_epochs=2, learning_rate=1e-3,
                 temperature=1.0, ratio=ratio, group_size=group_size, kl_coef=0.1)
    for packed in (False, True):
        torch.manual_seed(0)
        head, model = ValueHead(hidden_size(policy.model)), build_text_policy(tok, 'smoke', seed=0).model.train()
        optimizer = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=run.learning_rate, eps=1e-7)
        stats = ppo_update(ActorCritic(model, head), optimizer, Accelerator(cpu=True), rollout, run, tok.pad_token_id,
                           np.random.default_rng(0), reference=build_text_policy(tok, 'smoke', seed=0).model.eval(), packed=packed)
        results[packed] = stats, torch.cat([p.detach().flatten() for p in list(model.parameters()) + list(head.parameters())])
    (per_turn, before), (packed, after) = results[False], results[True]
    for key in ('policy_loss', 'value_loss', 'approx_kl', 'turn_kl', 'entropy', 'clip_fraction'):
        assert abs(per_turn[key] - packed[key]) < 1e-5, (key, per_turn[key], packed[key])
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert packed['trained'].total < per_turn['trained'].total          # each chain forwarded once
    assert packed['trained'].generated == per_turn['trained'].generated  # the same answer tokens trained


def test_packed_minibatches_keep_chains_whole_and_steps_as_before(policy):
    "Packed: the minibatch sizes of a shuffle of turns; within each optimizer step, each chain's turns together and in play order, shortest chains first."
    from sftrl.rl import _minibatches, chains, collect
    rollout = collect(policy, ValueHead(hidden_size(policy.model)), 'gp-l', steps=23, n_envs=3, seed=0, temperature=1.0, max_new_tokens=6)
    per_turn = _minibatches(rollout.turns, 4, 2, np.random.default_rng(0))
    packed = _minibatches(rollout.turns, 4, 2, np.random.default_rng(0), packed=True)
    assert [len(m) for m in packed] == [len(m) for m in per_turn] and sorted(np.concatenate(packed)) == list(range(23))
    length = lambda i: len(rollout.turns[i].prompt_ids) + len(rollout.turns[i].answer_ids)
    for s in range(0, len(packed), 2):
        order = list(np.concatenate(packed[s:s + 2]))
        for chain in chains(rollout.turns):
            here = [i for i in chain if i in order]
            if here: assert order[order.index(here[0]):order.index(here[0]) + len(here)] == here
        ends = [i for k, i in enumerate(order) if k + 1 == len(order) or (rollout.turns[order[k + 1]].env, rollout.turns[order[k + 1]].episode)
                != (rollout.turns[i].env, rollout.turns[i].episode)]
        assert [length(i) for i in ends] == sorted(length(i) for i in ends)


def test_fp32_and_bf16_train_the_same_smoke_run_within_stated_tolerances(tmp_path, policy, monkeypatch):
    """RL trains in `training_precision()` as SFT and DPO do (bf16 autocast where it measured faster on a CPU, its rollouts
    through the engine's bf16 weights). Measured 2026-12-05 on a CPU with bf16 units, 3 smoke updates: policy losses at most
    4e-5 apart, value losses 1e-3, entropies 1e-6, KL to the Init 4e-6; each tolerance is at least ten times that."""
    init = save_policy(policy, tmp_path / 'init')
    logs = {}
    for precision in ('fp32', 'bf16'):
        monkeypatch.setenv('SFTRL_PRECISION', precision)
        folder = train_rl(rl_run('smoke', 'gp-l', init=str(init), updates=3), root=tmp_path / precision, progress=False, report_to=[])
        logs[precision] = rl_log(folder)
    fp32, bf16 = logs['fp32'], logs['bf16']
    assert list(fp32.mean_reward) == list(bf16.mean_reward)
    for column, tolerance in (('policy_loss', 5e-4), ('value_loss', 1e-2), ('entropy', 1e-4), ('kl_init_id', 5e-5)):
        assert (fp32[column] - bf16[column]).abs().max() < tolerance, (column, fp32[column].tolist(), bf16[column].tolist())
    assert (fp32.policy_loss != bf16.policy_loss).any()   # bf16 did run: float32 would repeat the numbers exactly
