"DPO beyond the chapter: pairs from real smoke policies (text and vision, both variants), resume, and the study's tables and figures."
import copy

import numpy as np
import pandas as pd
import pytest
import torch

from sftrl.core import FEEDBACK_PREFIX
from sftrl.dpo import (dpo_run, pairs_record, preference_pairs, replay, saved_pairs, train_dpo)
from sftrl.models import load_policy
from sftrl.runs import checkpoint_table
from sftrl.sft import sft_run, train_sft
from sftrl.study import at_equal_compute, evaluate_arms, read_figure_csv, run_experiment, study_arms
from sftrl.tasks import TRAINING_SEED_OFFSET, evaluation_openings, make_env, opening_key, start_episode


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    return tmp_path_factory.mktemp('study')


@pytest.fixture(scope='module')
def init(tmp_path_factory):
    "The last checkpoint of the smoke SFT run of each task."
    tmp = tmp_path_factory.mktemp('sft')
    return {task: checkpoint_table(train_sft(sft_run('smoke', task), root=tmp, progress=False)).path.iloc[-1]
            for task in ('gp-l', 'gp-vl')}


def _check_pair(task, row, held_out, **env_kwargs):
    "The pair replays on a fresh training environment, in distribution, with the verifier's labels."
    opening = opening_key(task, *start_episode(make_env(task, 'train', **env_kwargs), task, 'train', row['seed']))
    assert opening not in held_out and row['seed'] >= TRAINING_SEED_OFFSET
    env, obs, info = replay(task, row, **env_kwargs)
    assert info['messages'] == row['prompt'] and info['split'] == 'train' and info['rule'].jack == 10   # the ID rule
    if 'images' in row: assert np.array_equal(np.asarray(row['images'][0]), obs['image'])
    assert copy.deepcopy(env).step(row['chosen'][0]['content'])[-1]['verdict'].correct
    verdict = env.step(row['rejected'][0]['content'])[-1]['verdict']
    assert not verdict.correct and verdict.category == row['rejected_category']


@pytest.mark.parametrize('task', ['gp-l', 'gp-vl'])
@pytest.mark.parametrize('revision', [False, True])
def test_pairs_from_a_model_are_in_distribution_and_labelled_by_the_verifier(init, task, revision):
    env_kwargs = {'resolution': 64} if task == 'gp-vl' else {}
    policy = load_policy(init[task])
    pairs = preference_pairs(policy, task, 6, seed=3, samples=2, max_new_tokens=24, revision=revision, **env_kwargs)
    held_out = evaluation_openings(task, **env_kwargs)
    for row in pairs: _check_pair(task, row, held_out, **env_kwargs)
    assert set(pairs['turn']) == ({1} if revision else {0})
    if revision: assert all(row['prompt'][-1]['content'].startswith(FEEDBACK_PREFIX) for row in pairs)
    record = pairs_record(pairs)
    assert record['pairs'] == 6 and record['generation'].generated > 0 and (record['generation'].image > 0) == (task == 'gp-vl')
    again = preference_pairs(policy, task, 6, seed=3, samples=2, max_new_tokens=24, revision=revision, **env_kwargs)
    assert again['rejected'] == pairs['rejected'] and again['seed'] == pairs['seed']   # the same seed, the same pairs


def test_hostile_arguments_are_refused(init):
    with pytest.raises(ValueError, match='n and samples must be >= 1'):
        preference_pairs(None, 'gp-l', 4, samples=0)
    with pytest.raises(ValueError, match='n and samples must be >= 1'):
        preference_pairs(None, 'gp-l', 0)
    with pytest.raises(ValueError, match='run.init must name'):
        train_dpo(dpo_run('smoke', 'gp-l'))


def test_an_interrupted_run_resumes_to_the_same_end(tmp_path, init):
    run = dpo_run('smoke', 'gp-l', init=init['gp-l'], checkpoints=4)
    straight = train_dpo(run, root=tmp_path / 'a', progress=False)
    train_dpo(run, root=tmp_path / 'b', progress=False, stop_after=2)
    assert saved_pairs(tmp_path / 'b' / straight.name) is not None and not (tmp_path / 'b' / straight.name / 'log.csv').exists()
    resumed = train_dpo(run, root=tmp_path / 'b', progress=False)
    a, b = checkpoint_table(straight), checkpoint_table(resumed)
    pd.testing.assert_frame_equal(a.drop(columns='path'), b.drop(columns='path'))
    weights = [load_policy(t.path.iloc[-1]).model.state_dict() for t in (a, b)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_smoke_dpo_rows_land_in_the_same_tables(root):
    arms = study_arms('gp-l', 'smoke', 0, root, with_dpo=True)
    assert list(dict.fromkeys(arms.arm)) == ['Init', 'SFT', 'RL', 'DPO']
    assert (arms[arms.arm == 'DPO'].gflops > arms[arms.arm == 'Init'].gflops.iloc[0]).all()
    matched = at_equal_compute(arms)
    assert list(matched.arm) == ['Init', 'SFT', 'RL', 'DPO']
    rows = evaluate_arms(matched, ['id', 'ood_rule'], 'smoke', root)
    filled = {arm: list(part.columns[part.notna().all()]) for arm, part in rows.groupby('arm')}
    assert len(rows) == 8 and all(columns == filled['RL'] for columns in filled.values())   # DPO rows fill the same columns
    assert (rows.episodes == 6).all() and rows.checkpoint[rows.arm == 'DPO'].str.startswith('smoke/dpo/').all()


def test_fig06_draws_a_dpo_series_on_request(root):
    figures = root / 'figures'
    run_experiment('fig06_rule_ood', 'smoke', figures_dir=figures, root=root, tasks=['gp-l'], dpo=True)
    data, meta = read_figure_csv(figures / 'fig06_rule_ood.csv')
    assert list(data.arm) == ['Init', 'SFT', 'RL', 'DPO'] and meta['preset'] == 'smoke'
    assert data.paper_value[data.arm == 'DPO'].isna().all() and data.paper_value[data.arm != 'DPO'].notna().all()
    assert (figures / 'fig06_rule_ood.png').stat().st_size > 10_000
