"""Evaluation beyond the chapter: a fixed seed reproduces an evaluation whatever the batch size and n; an interrupted
evaluation resumes to the uninterrupted rows (cut lines, crashes at any call, extending n); the metrics match hand
counts and the official statistics; training and evaluation episodes are apart by construction and the GeneralPoints
hand overlap is what the sampler gives."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from sftrl.core import STEP_LIMIT
from sftrl.evaluate import (binomial_se, categories, constant_policy, evaluate, load_evaluation, observation_digest,
                            oracle_policy, prompt_overlap, random_mistake_policy, read_log, summarize)
from sftrl.tasks import TASKS, evaluation_seeds, get_task, make_env, start_episode, training_seeds

SMALL = {'gp-vl': {'resolution': 96}, 'virl-vl': {'resolution': 48}}


def _eval(policy, task, split='id', **kw):
    kw.setdefault('progress', False)
    return evaluate(policy, task, split, env_kwargs=SMALL.get(task), **kw)


def _equal(a, b):
    for x, y in zip(a, b): pd.testing.assert_frame_equal(x, y)


class Crash(Exception): pass


def crashing(policy, after):
    calls = [0]
    def answer(batch):
        calls[0] += 1
        if calls[0] > after: raise Crash
        return policy(batch)
    return answer


# --- reproducibility ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('task', list(TASKS))
def test_fixed_seed_reproduces_whatever_the_batch(task):
    policy = random_mistake_policy(task, p=0.4, seed=3)
    n = 6 if task == 'virl-vl' else 12
    a = _eval(policy, task, n=n, batch_size=1)
    b = _eval(policy, task, n=n, batch_size=5)
    _equal(a, b)
    longer = _eval(policy, task, n=n + 3, batch_size=16)
    _equal(a, (longer[0][longer[0].sample_id < n].reset_index(drop=True), longer[1].head(n)))
    assert list(a[1].seed) == evaluation_seeds(0, n)
    other = _eval(policy, task, n=n, seed=1)
    assert list(other[1].seed) != list(a[1].seed)


def test_rows_are_consistent():
    steps, episodes = _eval(random_mistake_policy('virl-l', p=0.5, seed=1), 'virl-l', n=20, batch_size=8)
    assert list(episodes.sample_id) == list(range(20))
    for i, group in steps.groupby('sample_id'):
        ep = episodes.loc[i]
        assert list(group.veri_step) == list(range(len(group))) and ep.steps == len(group)
        assert ep.correct_steps == group.correct.sum() and math.isclose(ep.reward, group.reward.sum())
        assert ep.success == (group.terminated.iloc[-1] and group.correct.iloc[-1])
        assert group.terminated.iloc[-1] or group.truncated.iloc[-1]
        assert not (group.terminated | group.truncated).iloc[:-1].any()
        assert list(group.position) == sorted(group.position)              # V-IRL moves forward along its rail
        assert ep.success == (group.gt_action.iloc[-1] == 'stop()' and group.correct.iloc[-1])
    assert steps[steps.category == STEP_LIMIT.category].output.isna().all()
    assert steps[steps.category != STEP_LIMIT.category].output.notna().all()


def test_policy_batches_are_lockstep():
    sizes, seen_images = [], []
    def policy(batch):
        sizes.append(len(batch)); seen_images.extend(type(item.get('image')) for item in batch)
        assert all(set(item) >= {'messages', 'info'} for item in batch)
        return oracle_policy('gp-vl')(batch)
    _eval(policy, 'gp-vl', n=10, batch_size=4)
    assert sizes == [4, 4, 2] and set(seen_images) == {np.ndarray}
    sizes.clear()
    _eval(lambda b: sizes.append(len(b)) or [''] * len(b), 'gp-l', n=3, batch_size=8)
    assert sizes == [3] * 5                                     # the 6th, unverified call is not asked for


def test_budget_override():
    steps, episodes = _eval(constant_policy('no'), 'gp-l', n=4, viter=2)
    assert list(episodes.steps) == [3] * 4 and list(episodes.verified_steps) == [2] * 4
    steps, episodes = _eval(constant_policy('no'), 'virl-l', n=4, viter=1)
    assert list(episodes.steps) == [2] * 4


@pytest.mark.parametrize('bad,error', [(lambda b: 'x', ValueError), (lambda b: ['x'] * (len(b) + 1), ValueError),
                                       (lambda b: [1] * len(b), TypeError), (lambda b: None, ValueError)])
def test_bad_policies_are_refused(bad, error):
    with pytest.raises(error):
        _eval(bad, 'gp-l', n=2)


def test_n_zero():
    steps, episodes = _eval(constant_policy(), 'gp-l', n=0)
    assert len(steps) == len(episodes) == 0
    summary = summarize(steps, episodes, 'gp-l')
    assert math.isnan(summary.loc['success', 'value']) and summary.loc['success', 'n'] == 0


# --- resume ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('task,after', [('gp-l', 1), ('gp-l', 4), ('virl-l', 7), ('gp-vl', 3), ('virl-l', 12)])
def test_resume_after_a_crash(tmp_path, task, after):
    policy = random_mistake_policy(task, p=0.5, seed=2)
    reference = _eval(policy, task, n=10, batch_size=3)
    log = tmp_path / 'log.jsonl'
    with pytest.raises(Crash):
        _eval(crashing(policy, after), task, n=10, batch_size=3, out=log)
    finished = set(read_log(log)[1])
    asked = []
    resumed = _eval(lambda b: asked.extend(b) or policy(b), task, n=10, batch_size=3, out=log)
    _equal(resumed, reference)
    _equal(load_evaluation(log), reference)
    unfinished = resumed[0][~resumed[0].sample_id.isin(finished)]
    assert len(asked) == unfinished.output.notna().sum()        # finished episodes were read back, not played again


def test_resume_repeated_crashes_and_cut_lines(tmp_path):
    policy = random_mistake_policy('gp-l', p=0.7, seed=5)
    reference = _eval(policy, 'gp-l', n=15, batch_size=4)
    log = tmp_path / 'log.jsonl'
    finished = []
    for after in (2, 2, 3):
        with pytest.raises(Crash):
            _eval(crashing(policy, after), 'gp-l', n=15, batch_size=4, out=log)
        finished.append(len(read_log(log)[1]))
        text = log.read_text()
        log.write_text(text + text.splitlines()[-1][:17])          # a line cut by a kill, no newline
    assert 0 < finished[0] <= finished[1] <= finished[2] < 15
    _equal(_eval(policy, 'gp-l', n=15, batch_size=4, out=log), reference)
    assert all(json.loads(line) for line in log.read_text().splitlines())     # the cut lines were removed


def test_a_partial_episode_block_is_played_again(tmp_path):
    policy = random_mistake_policy('gp-l', p=0.7, seed=5)
    log = tmp_path / 'log.jsonl'
    reference = _eval(policy, 'gp-l', n=6, out=log)
    lines = log.read_text().splitlines()
    assert json.loads(lines[-1])['type'] == 'episode' and json.loads(lines[-2])['type'] == 'step'
    log.write_text('\n'.join(lines[:-1]) + '\n')                  # the last episode lost its summary line
    assert len(read_log(log)[1]) == 5
    _equal(_eval(policy, 'gp-l', n=6, out=log), reference)
    _equal(load_evaluation(log), reference)                      # its stale step lines are not read back


def test_extend_n_and_refuse_another_evaluation(tmp_path):
    log = tmp_path / 'log.jsonl'
    policy = oracle_policy('gp-l')
    _eval(policy, 'gp-l', n=5, out=log)
    asked = []
    steps, episodes = _eval(lambda b: asked.extend(b) or policy(b), 'gp-l', n=8, out=log)
    assert len(asked) == 3 and len(episodes) == 8
    _equal((steps, episodes), _eval(policy, 'gp-l', n=8))
    assert len(_eval(policy, 'gp-l', n=3, out=log)[1]) == 3
    for change in ({'seed': 1}, {'viter': 3}, {'split': 'ood_rule'}):
        with pytest.raises(ValueError, match='holds another evaluation'):
            evaluate(policy, 'gp-l', **{'split': 'id', 'n': 5, 'out': log, 'progress': False, **change})
    with pytest.raises(ValueError, match='holds another evaluation'):
        evaluate(policy, 'gp-l', 'id', n=5, out=log, progress=False, env_kwargs={'mode': 'official'})


# --- metrics -----------------------------------------------------------------------------------------------------

def test_metric_hand_count_virl():
    steps = pd.DataFrame({'sample_id': [0, 0, 0, 1, 1, 1],
                          'category': ['CORRECT_ACTION', 'INCORRECT_OBS', 'CORRECT_ACTION',
                                       'INCORRECT_ACTION', 'INCORRECT_ACTION', STEP_LIMIT.category],
                          'reward': [1, -1.5, 1, -1, -1, -1], 'correct': [True, False, True, False, False, False]})
    episodes = pd.DataFrame({'sample_id': [0, 1], 'success': [True, False]})
    m = summarize(steps, episodes, 'virl-l')
    assert m.loc['per_step_accuracy', 'n'] == 5 and math.isclose(m.loc['per_step_accuracy', 'value'], 2 / 5)
    assert math.isclose(m.loc['per_step_accuracy', 'se'], math.sqrt(0.4 * 0.6 / 5))
    assert math.isclose(m.loc['mean_reward', 'value'], -1.5 / 5)
    assert math.isclose(m.loc['mean_reward', 'se'], np.std([1, -1.5, 1, -1, -1], ddof=1) / math.sqrt(5))
    assert math.isclose(m.loc['INCORRECT_ACTION', 'value'], 2 / 5) and m.loc['INCORRECT_ACTION', 'per'] == 'step'
    assert 'recognition_accuracy' not in m.index and STEP_LIMIT.category not in m.index
    official = summarize(steps, episodes, 'virl-l', count_step_limit=True)
    assert math.isclose(official.loc['per_step_accuracy', 'value'], 2 / 6)        # the official CORRECT_ACTION rate
    assert math.isclose(official.loc['success', 'value'], 0.5) and official.loc['success', 'per'] == 'episode'


def test_metrics_against_the_official_counts():
    "Recompute the official StatLogger's numbers from the rows: step_num counts every env.step."
    steps, episodes = _eval(random_mistake_policy('gp-vl', p=0.6, seed=4), 'gp-vl', n=30)
    m = summarize(steps, episodes, 'gp-vl', count_step_limit=True)
    step_num = len(steps)
    assert math.isclose(m.loc['recognition_accuracy', 'value'], 1 - (steps.category == 'INCORRECT_VISION').sum() / step_num)
    assert math.isclose(m.loc['success', 'value'], (steps.category == 'CORRECT_SOLUTION').sum() / len(episodes))
    assert math.isclose(m.loc['recognition_per_episode', 'value'], episodes.recognition.mean())
    per_episode = [1 - (g.category == 'INCORRECT_VISION').sum() / (g.category != STEP_LIMIT.category).sum()
                   for _, g in steps.groupby('sample_id')]
    assert np.allclose(per_episode, episodes.recognition)
    rates = m[m.per == 'step'].loc[list(categories('gp-vl')) + [STEP_LIMIT.category], 'value']
    assert math.isclose(rates.sum(), 1.0)


def test_scripted_policies_bound_the_metrics():
    for task in TASKS:
        n = 4 if task == 'virl-vl' else 10
        for split in TASKS[task].splits:
            best = summarize(*_eval(oracle_policy(task), task, split, n=n), task)
            worst = summarize(*_eval(constant_policy('{}'), task, split, n=n), task)
            assert best.loc['success', 'value'] == 1 and best.loc['per_step_accuracy', 'value'] == 1
            assert worst.loc['success', 'value'] == 0 and worst.loc['per_step_accuracy', 'value'] == 0


def _written_as_in_training(batch):
    "An answerer that learnt the ID rule: J, Q, K written as 10 (GeneralPoints), compass actions (V-IRL), whatever the prompt says."
    from sftrl.tasks import oracle_answer, points_answer
    out = []
    for item in batch:
        info = item['info']
        if 'numbers' in info: out.append(points_answer(info['cards'], [min(v, 10) for v in info['numbers']], '1+2'))
        else: out.append(oracle_answer('virl-l', {}, {**info, 'gt_action': info['absolute_action']}))
    return out


@pytest.mark.parametrize('task', ['gp-l', 'gp-vl', 'virl-l', 'virl-vl'])
def test_rule_validity_sees_an_answerer_that_ignores_the_stated_rule(task):
    "Issue 18 §2: valid on ID, invalid under the OOD rule (every GP OOD hand holds a face card; V-IRL's first turn is absolute)."
    n = 4 if task == 'virl-vl' else 12
    for split, validity in (('id', 1.0), ('ood_rule', None)):
        steps, episodes = _eval(_written_as_in_training, task, split, n=n)
        m = summarize(steps, episodes, task)
        assert m.loc['rule_validity', 'per'] == 'first answer'
        assert math.isclose(m.loc['rule_validity', 'se'], binomial_se(m.loc['rule_validity', 'value'], m.loc['rule_validity', 'n']))
        if validity is not None: assert m.loc['rule_validity', 'value'] == validity
        elif get_task(task).env == 'points': assert m.loc['rule_validity', 'value'] == 0 and m.loc['rule_validity', 'n'] == n
        else: assert m.loc['rule_validity', 'value'] < 1
    best = summarize(*_eval(oracle_policy(task), task, 'ood_rule', n=n), task)
    worst = summarize(*_eval(constant_policy('{}'), task, 'ood_rule', n=n), task)
    assert best.loc['rule_validity', 'value'] == 1 and worst.loc['rule_validity', 'value'] == 0


def test_rule_validity_counts_first_answers_only():
    "GeneralPoints: one first answer per episode; V-IRL: one per position reached, whatever the retries."
    steps, episodes = _eval(random_mistake_policy('virl-l', p=0.5, seed=3), 'virl-l', n=10)
    m = summarize(steps, episodes, 'virl-l')
    positions = steps.groupby(['sample_id', 'position']).ngroups
    assert m.loc['rule_validity', 'n'] == positions < len(steps)
    steps, episodes = _eval(random_mistake_policy('gp-l', p=0.8, seed=3), 'gp-l', n=10)
    assert summarize(steps, episodes, 'gp-l').loc['rule_validity', 'n'] == 10 < len(steps)
    assert 'rule_validity' not in summarize(steps.drop(columns='output'), episodes, 'gp-l').index   # rows without answers


def test_paired_comparison_on_the_same_hands():
    from sftrl.evaluate import paired_comparison
    _, a = _eval(random_mistake_policy('gp-l', p=0.7, seed=5), 'gp-l', n=40, viter=1)
    _, b = _eval(random_mistake_policy('gp-l', p=0.2, seed=5), 'gp-l', n=40, viter=1)
    c = paired_comparison(a, b)
    d = b.success.astype(float) - a.success.astype(float)
    assert c.n == 40 and math.isclose(c.difference, d.mean()) and math.isclose(c.se, d.std(ddof=1) / math.sqrt(40))
    assert c.gained == (d > 0).sum() and c.lost == (d < 0).sum() == 0
    reversed_ = paired_comparison(b, a)
    assert math.isclose(reversed_.difference, -c.difference) and (reversed_.gained, reversed_.lost) == (c.lost, c.gained)
    with pytest.raises(ValueError, match='same seeded episodes'):
        paired_comparison(a, b.assign(seed=b.seed + 1))


def test_binomial_se():
    assert binomial_se(0.5, 100) == 0.05 and binomial_se(0.0, 10) == 0 and math.isnan(binomial_se(0.3, 0))


def test_observation_digest_sees_the_image():
    item = {'messages': [{'role': 'user', 'content': 'same text'}]}
    a, b = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)
    assert observation_digest({**item, 'image': a}) != observation_digest({**item, 'image': b})
    assert observation_digest({**item, 'image': a}) == observation_digest({**item, 'image': a.copy()})
    assert observation_digest(item) != observation_digest({'messages': [{'role': 'assistant', 'content': 'same text'}]})


# --- train / evaluation separation -------------------------------------------------------------------------------

def test_training_and_evaluation_seeds_never_meet():
    for seed in range(3):
        for train_seed in range(3):
            assert not set(evaluation_seeds(seed, 3000)) & set(training_seeds(train_seed, 3000))


def _openings(task, split, seeds):
    env = make_env(task, split, resolution=64) if get_task(task).vision else make_env(task, split)
    out = []
    for i, s in enumerate(seeds):
        obs, info = start_episode(env, task, split, s, i)
        out.append((obs['text'], tuple(info['cards']), tuple(info['suits'])))
    return out


def test_gp_overlap_is_the_samplers_not_a_leak():
    "Verbatim: the whole first observation. GP-L shows ranks; GP-VL's image shows ranks and suits (same prompt text)."
    ev = _openings('gp-l', 'id', evaluation_seeds(0, 200))
    tr = _openings('gp-l', 'train', training_seeds(0, 4000))
    text_seen = np.mean([o[0] in {t[0] for t in tr} for o in ev])
    # the overlap equals that between two independent draws of the same sizes: chance, not construction
    other = _openings('gp-l', 'train', training_seeds(1, 200))
    chance = np.mean([o[0] in {t[0] for t in tr} for o in other])
    assert 0 < text_seen < 0.5 and abs(text_seen - chance) < 0.12
    assert math.isclose(text_seen, prompt_overlap('gp-l', 'id', 200, 4000))
    # leaky control: training on the evaluation seeds would repeat every evaluation prompt
    leaky = {t[0] for t in _openings('gp-l', 'train', evaluation_seeds(0, 200))}
    assert all(o[0] in leaky for o in ev)
    vl = prompt_overlap('gp-vl', 'id', 200, 4000)
    assert vl < text_seen and vl < 0.1
    assert prompt_overlap('gp-vl', 'ood_visual', 100, 2000) == 0 and prompt_overlap('gp-l', 'ood_rule', 100, 2000) == 0


def test_virl_overlap_is_zero():
    assert prompt_overlap('virl-l', 'id', 40, 400) == 0
    train_routes = {make_env('virl-l', 'train').record(k)['route_id'] for k in range(1000)}
    env = make_env('virl-l', 'id')
    assert not train_routes & {env.record(k)['route_id'] for k in range(len(env.routes))}

