"""The task registry beyond the chapter: every task and split builds, invalid combinations say what to do, the oracle
solves every split of every task at the first try (many seeds, both verifier modes), and the seed conventions keep
training and evaluation episodes apart."""
import copy
import inspect

import numpy as np
import pytest

from sftrl.core import episode_seeds
from sftrl.nav import NavigationEnv
from sftrl.points import GeneralPointsEnv, verify
from sftrl.tasks import (EVAL_SPLITS, FAMILIES, TASKS, TRAIN_SPLIT, TRAINING_SEED_OFFSET, evaluation_seeds, get_task,
                         make_env, oracle_answer, start_episode, training_seeds)

MODES = {'points': ('exact', 'official'), 'nav': ('fixed', 'official')}
CASES = [(t, s, m) for t in TASKS.values() for s in (TRAIN_SPLIT, *t.splits) for m in MODES[t.env]]


def _kwargs(task, mode):
    return {'mode': mode, **({'resolution': 64} if task.vision else {})}


@pytest.mark.parametrize('task,split,mode', CASES, ids=[f'{t.name}-{s}-{m}' for t, s, m in CASES])
def test_oracle_first_try_everywhere(task, split, mode):
    env = make_env(task, split, **_kwargs(task, mode))
    n = 12 if task.vision and task.env == 'nav' else 40
    seeds = training_seeds(5, n) if split == TRAIN_SPLIT else evaluation_seeds(5, n)
    for i, seed in enumerate(seeds):
        obs, info = start_episode(env, task, split, seed, i)
        if mode == 'official' and sorted(info.get('numbers', [])) == [3, 3, 8, 8]: continue   # only inexact solutions
        while True:
            obs, reward, terminated, truncated, info = env.step(oracle_answer(task, obs, info))
            assert info['verdict'].correct, (task.name, split, mode, seed, info['verdict'])
            if terminated or truncated: break
        assert terminated and not truncated


def test_registry_facts():
    assert [t.title for t in TASKS.values()] == ['GP-L', 'GP-VL', 'V-IRL-L', 'V-IRL-VL']
    assert {t.name: (t.viter, t.metric, t.compute_lambda) for t in TASKS.values()} == {
        'gp-l': (5, 'success', 6.0), 'gp-vl': (5, 'success', 6.0),
        'virl-l': (2, 'per_step_accuracy', 5.1), 'virl-vl': (2, 'per_step_accuracy', 5.1)}
    assert inspect.signature(GeneralPointsEnv).parameters['viter'].default == TASKS['gp-l'].viter
    assert inspect.signature(NavigationEnv).parameters['viter'].default == TASKS['virl-l'].viter
    assert all(set(t.splits) <= set(EVAL_SPLITS) for t in TASKS.values())
    assert [t.name for t in TASKS.values() if 'ood_visual' in t.splits] == ['gp-vl', 'virl-vl']
    for name in ('gp-l', 'GP-L', 'V-IRL-VL', 'virl-vl', TASKS['gp-vl']): assert get_task(name) in TASKS.values()


@pytest.mark.parametrize('task,split', [('gp-l', 'ood_visual'), ('virl-l', 'ood_visual'), ('gp-vl', 'test'),
                                        ('virl-vl', 'OOD'), ('gp-l', '')])
def test_invalid_split_is_a_clear_error(task, split):
    with pytest.raises(ValueError, match='has no split .* choose one of'):
        make_env(task, split)


def test_unknown_task():
    with pytest.raises(ValueError, match='task must be one of'):
        make_env('gp', 'id')


def test_splits_are_the_papers():
    gp = {s: make_env('gp-vl', s, resolution=64) for s in (TRAIN_SPLIT, *TASKS['gp-vl'].splits)}
    suits = {s: {x for i in range(30) for x in env.reset(seed=i)[1]['suits']} for s, env in gp.items()}
    assert suits['train'] <= {'S', 'C'} and suits['id'] <= {'S', 'C'} and suits['ood_rule'] <= {'S', 'C'}
    assert suits['ood_visual'] <= {'H', 'D'}
    assert gp['ood_rule'].rule.value('K') == 13 and gp['id'].rule.value('K') == 10
    assert all(any(c in 'JQK' for c in gp['ood_rule'].reset(seed=i)[1]['cards']) for i in range(30))
    assert make_env('virl-l', 'ood_rule').absolute_action is False
    assert make_env('virl-l', 'id').absolute_action is True
    assert make_env('gp-l', 'id', viter=1).viter == 1


def test_seed_conventions():
    ev, tr = evaluation_seeds(0, 2000), training_seeds(0, 2000)
    assert ev == episode_seeds(0, 2000) and max(ev) < TRAINING_SEED_OFFSET <= min(tr)
    assert not set(evaluation_seeds(7, 500)) & set(training_seeds(7, 500))
    assert training_seeds(3, 10)[:4] == training_seeds(3, 4)
    env = make_env('gp-l', 'train')
    assert env.reset(seed=tr[0])[1]['cards'] == env.reset(seed=tr[0])[1]['cards']        # big seeds are valid seeds


def test_visual_benchmark_in_order():
    env = make_env('virl-vl', 'ood_visual', resolution=32)
    assert [start_episode(env, 'virl-vl', 'ood_visual', 1, i)[1]['route_idx'] for i in range(0, 40, 7)] == \
        [i % len(env.routes) for i in range(0, 40, 7)]


def test_points_oracle_format():
    env = make_env('gp-l', 'id')
    obs, info = env.reset(seed=0)
    answer = oracle_answer('gp-l', obs, info)
    assert answer.startswith('\n{\n  "cards": [') and answer.endswith('",\n}')
    assert f'"formula": "{info["solution"]}=24"' in answer and str(info['numbers']) in answer
    for mode in ('exact', 'official'):
        assert verify(answer, info['cards'], vision=True, mode=mode).category == 'CORRECT_SOLUTION'
    with pytest.raises(ValueError, match='no solution'):
        oracle_answer('gp-l', obs, {**info, 'numbers': [1, 1, 1, 1]})


def test_expert_formula_is_float_exact_whenever_possible():
    from itertools import combinations_with_replacement
    from sftrl.cards import solve
    from sftrl.points import formula_value
    from sftrl.tasks import expert_formula
    inexact = []
    for hand in combinations_with_replacement(range(1, 14), 4):
        formula = expert_formula(hand)
        if formula is None: assert not solve(list(hand)); continue
        assert formula_value(formula) == 24
        if formula_value(formula, 'official') != 24: inexact.append(hand)
    assert inexact == [(3, 3, 8, 8)]


@pytest.mark.parametrize('preset', ['smoke', 'tiny', 'paper'])
def test_every_trainer_and_the_study_use_the_preset_verifier(preset):
    "Issue 18 §4: the paper preset trains and evaluates as the official code judges; the CPU presets keep the exact verifier."
    from sftrl.dpo import dpo_run
    from sftrl.grpo import grpo_run
    from sftrl.rl import rl_run
    from sftrl.sft import sft_run
    from sftrl.study import provenance, study_preset
    from sftrl.tasks import PRESET_VERIFIERS, env_settings
    stated = {'smoke': 'exact', 'tiny': 'exact', 'paper': 'official'}[preset]
    assert PRESET_VERIFIERS[preset] == study_preset(preset).verifier == provenance(preset, [0], 0.0)['verifier'] == stated
    for task in TASKS.values():
        for run in (sft_run(preset, task), rl_run(preset, task), dpo_run(preset, task), grpo_run(preset, task)):
            env = make_env(task, 'train', **env_settings(task, 64, run.verifier))
            assert env.mode == (stated if task.env == 'points' or stated == 'official' else 'fixed'), (preset, task.name, run)


@pytest.mark.parametrize('task', list(TASKS.values()), ids=list(TASKS))
def test_family_vocabulary(task):
    "Both families answer the same questions: the oracle is right and follows the rule, a mistake is wrong, and the ground truth alone judges as the environment does."
    family, rng = task.family, np.random.default_rng(0)
    assert family is FAMILIES[task.env] and family.mode('official') == 'official' and family.mode('exact') in family.modes
    for split in task.splits:
        env = make_env(task, split, **({'resolution': 64} if task.vision else {}))
        for i, seed in enumerate(evaluation_seeds(2, 3)):
            obs, info = start_episode(env, task, split, seed, i)
            truth = family.ground_truth(env)
            assert set(truth) == set(family.truth_keys)
            right, wrong = family.oracle(info), family.mistake(info, task.vision, rng)
            assert family.verify(right, truth, task.vision).correct
            verdict = family.verify(wrong, truth, task.vision)
            assert not verdict.correct and verdict.category in family.categories
            assert verdict == copy.deepcopy(env).step(wrong)[-1]['verdict']
            assert family.follows_rule(right, info.get('numbers'), getattr(env, 'absolute_action', True))
            assert set(family.step_context(info)) and family.action_key in right
