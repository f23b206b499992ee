"""A lane of the study on the smoke preset: planned from the caches without running, stopped mid-way, continued, and read
back on a fresh clone from the ledger alone."""
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sftrl.arms import evaluate_arms, study_arms, study_run
from sftrl.cli import main
from sftrl.ledger import LEDGER_ENV
from sftrl.lanes import (LANE_SPLITS, STAGES, TEXT_CORE, lane_plan, lane_stages, plan_text, run_lane, study_plan,
                         study_plan_text)
from sftrl.sft import train_sft

SFTRL = str(Path(sys.executable).parent / 'sftrl')


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob('*') if p.is_file()} if root.exists() else set()


@pytest.mark.parametrize('preset', ['smoke', 'tiny'])
def test_the_plan_of_an_untouched_root_is_all_to_do(tmp_path, monkeypatch, preset):
    monkeypatch.setenv(LEDGER_ENV, 'off')   # the repository's ledger holds finished tiny lanes (the next test reads them)
    for task in TEXT_CORE:
        plan = lane_plan(task, preset, 0, tmp_path / 'runs')
        assert list(plan.stage) == lane_stages(task)
        assert set(plan.status) == {'to do'} and plan.done.sum() == 0
        assert plan.left_s.gt(0).all() and set(plan.cost_from) == {'measured'}   # every text-core cost is measured
        assert plan.attrs['upper_bound'] and plan.attrs['init_step'] is None
    assert not (tmp_path / 'runs').exists()   # nothing written


def test_the_committed_gp_l_lane_reads_as_done_from_the_ledger(tmp_path):
    "The keys a plan computes are the ones the study wrote: the repository's ledger holds GP-L's whole tiny lane (seed 0)."
    plan = lane_plan('gp-l', 'tiny', 0, tmp_path / 'runs')
    assert set(plan.status) == {'done'} and plan.attrs['init_step'] == 350, plan_text(plan)
    assert not (tmp_path / 'runs').exists()


def test_an_interrupted_lane_continues_and_a_fresh_clone_reads_it_from_the_ledger(tmp_path, monkeypatch):
    monkeypatch.setenv(LEDGER_ENV, str(tmp_path / 'ledger'))   # the smoke preset is kept only in a named ledger
    root, task = tmp_path / 'runs', 'gp-l'
    # killed in the middle of the SFT run: its first checkpoint written, the run not finished
    run, folder = study_run('sft', task, 'smoke', 0, root)
    train_sft(run, root=folder.parent, progress=False, stop_after=3)
    plan = lane_plan(task, 'smoke', 0, root)
    assert list(plan.status) == ['partial', 'to do', 'to do', 'to do', 'to do', 'to do'] and plan.done[0] == 3
    # a sitting that ends after the Init
    lines = []
    run_lane(task, 'smoke', 0, root, until='init', log=lines.append)
    assert lines[-1].startswith('lane GP-L, seed 0: stopped after init in ')
    assert [line.rsplit(':', 1)[0].strip() for line in lines[1:3]] == [STAGES['sft'][0], STAGES['init'][0]]
    plan = lane_plan(task, 'smoke', 0, root)
    assert list(plan.status) == ['done', 'done', 'partial', 'to do', 'to do', 'to do'] and plan.attrs['init_step'] == 3
    assert plan.done[2] == 2   # the Init and the last SFT checkpoint were evaluated ID to choose the Init: Fig. 5 reuses them
    assert list((tmp_path / 'ledger' / 'smoke' / 'sft').glob('*/checkpoints/checkpoint-3/*.safetensors'))   # the Init's weights, kept
    # a sitting that ends after the SFT checkpoints' evaluations: every one done before the RL run begins
    run_lane(task, 'smoke', 0, root, until='sft_evals', log=lambda line: None)
    plan = lane_plan(task, 'smoke', 0, root)
    assert list(plan.status) == ['done', 'done', 'done', 'to do', 'to do', 'to do'] and plan.total[2] == 2 * len(LANE_SPLITS)
    assert not any((root / 'smoke' / 'rl').glob('*/log.jsonl'))   # the RL run has not begun
    # the next sitting: the finished stages are found, the rest run, each with its wall time
    lines = []
    final = run_lane(task, 'smoke', 0, root, log=lines.append)
    assert set(final.status) == {'done'} and final.wall_s.notna().all()
    assert lines[1] == f"  {STAGES['sft'][0]}: done before" and lines[-1].startswith('lane GP-L, seed 0: finished in ')
    record = json.loads((root / 'smoke' / 'lanes' / 'gp-l-seed0.json').read_text())
    assert set(record) == set(lane_stages(task)) and record['sft']['units'] == 3.0   # the sitting that finished SFT did its last 3 steps
    # what the lane left is what Fig. 5 reads: no evaluation is played again
    before = _files(root / 'smoke' / 'eval')
    data = evaluate_arms(study_arms(task, 'smoke', 0, root), list(LANE_SPLITS), 'smoke', root)
    assert _files(root / 'smoke' / 'eval') == before and len(data) == final.total[2] + 2 * final.total[4]
    # a fresh clone elsewhere: every stage is done, read from the ledger alone; of the wall times only the SFT log's travels
    fresh = lane_plan(task, 'smoke', 0, tmp_path / 'elsewhere')
    assert set(fresh.status) == {'done'} and fresh.attrs['init_step'] == 3
    assert fresh.wall_s[0] > 0 and fresh.wall_s[1:].isna().all()
    assert not (tmp_path / 'elsewhere').exists()
    assert 'left: nothing, the lane is done' in plan_text(fresh)
    assert '1 of 2 lanes done' in study_plan_text(study_plan('smoke', root=root))


def test_the_commands_plan_without_running(tmp_path, monkeypatch):
    monkeypatch.setenv('SFTRL_RUNS', str(tmp_path / 'runs'))   # `sftrl reproduce --plan` reads the runs folder there
    monkeypatch.setenv(LEDGER_ENV, 'off')
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(['reproduce', '--plan', '--preset', 'tiny', '--seeds', '2']) == 0
    text = out.getvalue()
    assert text.count('tiny preset, seed ') == 8 and '0 of 8 lanes done; left: ≤ ' in text   # every task's lane, two seeds
    assert 'figures drawn at every seed asked' in text   # then the figures' seeds
    run = subprocess.run([SFTRL, 'lane', 'virl-l', '--preset', 'smoke', '--root', str(tmp_path / 'other'), '--plan'],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith('V-IRL-L, smoke preset, seed 0') and 'to do' in run.stdout
    assert not (tmp_path / 'runs').exists() and not (tmp_path / 'other').exists()
    run = subprocess.run([SFTRL, 'lane', 'gp-l', '--preset', 'smoke', '--root', str(tmp_path), '--until', 'nothing'],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and 'until must be one of' in run.stderr
