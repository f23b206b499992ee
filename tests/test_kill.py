"""kill -9 at a random moment (issue 22): an evaluation process killed mid-run, several times, keeps every episode it
finished, leaves at most its last line half-written, and resumes to exactly the rows of an uninterrupted run; SFT and
RL runs killed at random moments and inside their checkpoint writes resume to the uninterrupted run's weights and logs."""
import dataclasses
import json
import multiprocessing
import os
import pathlib
import queue as queues
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback, TrainerState

from sftrl.evaluate import evaluate, load_evaluation, random_mistake_policy, read_log
from sftrl.models import build_text_policy, build_tokenizer, save_policy, task_texts
from sftrl.rl import rl_checkpoints, rl_run, train_rl
from sftrl.sft import CheckpointCompute, checkpoint_table, evaluation_openings, sft_run, train_sft

N, BATCH = 24, 4
SCRIPT = f"""
import sys, time
from sftrl.evaluate import evaluate, random_mistake_policy
policy = random_mistake_policy('gp-l', p=0.6, seed=4)
def slow(batch):
    print('answering', flush=True)
    time.sleep(0.03)
    return policy(batch)
evaluate(slow, 'gp-l', 'id', n={N}, batch_size={BATCH}, out=sys.argv[1], progress=False)
print('finished', flush=True)
"""


def _kill_at_random(log, rng) -> bool:
    "Start the evaluation in a child process and SIGKILL it a random moment after it starts answering; False if it finished first."
    child = subprocess.Popen([sys.executable, '-c', SCRIPT, str(log)], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    first = child.stdout.readline()
    if first.strip() != 'answering':
        child.wait(); return False
    time.sleep(rng.uniform(0.0, 0.6))
    child.send_signal(signal.SIGKILL)
    child.wait()
    return child.returncode == -signal.SIGKILL


def test_evaluation_survives_kill_9_at_random_moments(tmp_path):
    reference = evaluate(random_mistake_policy('gp-l', p=0.6, seed=4), 'gp-l', 'id', n=N, batch_size=BATCH, progress=False)
    log, rng, finished, kills = tmp_path / 'eval.jsonl', np.random.default_rng(22), [], 0
    for _ in range(3):
        killed = _kill_at_random(log, rng)
        kills += killed
        lines = log.read_text().splitlines(keepends=True) if log.exists() else []
        for line in lines[:-1]: json.loads(line)                              # only the last line may be half-written
        if lines and lines[-1].endswith('\n'): json.loads(lines[-1])
        done = set(read_log(log)[1])
        assert not finished or finished[-1] <= done                           # finished episodes are kept
        finished.append(done)
        if not killed: break
    assert kills >= 1 and len(finished[0]) < N                               # work was really interrupted
    resumed = evaluate(random_mistake_policy('gp-l', p=0.6, seed=4), 'gp-l', 'id', n=N, batch_size=BATCH, out=log,
                       progress=False)
    for a, b in zip(resumed, reference): pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    for a, b in zip(load_evaluation(log), reference):
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


# --- training ---------------------------------------------------------------------------------------------------
# The runs below are trained in children forked from this process (sftrl imported, the smoke base loaded: a fresh
# interpreter would spend most of the test importing) and killed with SIGKILL: first by themselves inside a checkpoint's
# write (the windows where a kill used to leave a run that could not resume, or resumed wrong), then by the test at
# seeded random moments. Each child tells the test when each step (SFT) or update (RL) begins.

def _next(signals, child) -> float:
    "When the child's next step began (it reports each); ChildProcessError once it has ended."
    while True:
        try: signals.get(timeout=0.2); return time.monotonic()
        except queues.Empty:
            if not child.is_alive(): raise ChildProcessError


def _run_killed(target, args, window, rng) -> bool:
    "Run `target(*args, signals, window)` in a forked child; 'random': SIGKILL it a seeded random moment into the step after its second (never past the one after). Whether it was killed."
    context = multiprocessing.get_context('fork')
    signals = context.Queue()
    child = context.Process(target=target, args=(*args, signals, window))
    child.start()
    if window == 'random':
        try:
            first, second = _next(signals, child), _next(signals, child)
            time.sleep(rng.uniform(0.0, 1.0) * (second - first))
            os.kill(child.pid, signal.SIGKILL)
        except ChildProcessError: pass   # it finished first
    child.join(300)
    return child.exitcode == -signal.SIGKILL


def _die_within(owner, name, when, cut=None):
    "Make `owner.name` SIGKILL its own process when `when(*args)` holds, after writing half a file with `cut(*args)` if given."
    original = getattr(owner, name)
    def dying(*args, **kwargs):
        if when(*args):
            if cut: cut(*args)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    setattr(owner, name, dying)


SFT = dict(examples=24, batch_size=4, checkpoints=3)   # 6 steps, checkpoints at 2, 4 and 6


class _Steps(TrainerCallback):
    def __init__(self, signals): self.signals = signals
    def on_step_begin(self, args, state, control, **kwargs): self.signals.put(state.global_step)


def _sft_child(root, at, signals, window):
    import sftrl.base
    train = sftrl.base.Trainer.train
    def reporting(self, *args, **kwargs): self.add_callback(_Steps(signals)); return train(self, *args, **kwargs)
    sftrl.base.Trainer.train = reporting
    if window == 'trainer_state':   # the newest checkpoint's trainer_state.json cut half-way
        def half(state, path): Path(path).write_text(json.dumps(dataclasses.asdict(state), indent=2)[:200])
        _die_within(TrainerState, 'save_to_json', lambda state, path: state.global_step == at, half)
    if window == 'compute':         # the newest checkpoint written by transformers, its compute.json not yet
        _die_within(CheckpointCompute, 'record', lambda callback, state: state.global_step == at)
    train_sft(sft_run('smoke', 'gp-l', **SFT), root=root, progress=False, report_to=[])


def _log(folder):
    "A run's log.csv without what describes only the last process's session (transformers' summary: its runtime, speeds, mean loss)."
    log = pd.read_csv(folder / 'log.csv')
    return log.drop(columns=[c for c in log.columns if 'runtime' in c or 'per_second' in c or c == 'train_loss']).sort_index(axis=1)


def test_sft_survives_kill_9_within_its_checkpoint_writes_and_at_random_moments(tmp_path):
    evaluation_openings('gp-l')                           # computed once here, inherited by every child
    reference = train_sft(sft_run('smoke', 'gp-l', **SFT), root=tmp_path / 'straight', progress=False, report_to=[])
    steps, rng, root = list(checkpoint_table(reference).step), np.random.default_rng(22), tmp_path / 'killed'
    # killed twice writing checkpoint 4, the run resumes from 2, is killed in step 4 or 5, resumes from 2 or 4, is killed again
    kills = [_run_killed(_sft_child, (str(root), steps[1]), window, rng) for window in ('trainer_state', 'compute', 'random', 'random')]
    assert kills[:3] == [True, True, True]               # every window was really hit (the last may finish first)
    resumed = train_sft(sft_run('smoke', 'gp-l', **SFT), root=root, progress=False, report_to=[])
    pd.testing.assert_frame_equal(checkpoint_table(resumed).drop(columns='path'), checkpoint_table(reference).drop(columns='path'))
    pd.testing.assert_frame_equal(_log(resumed), _log(reference))
    for step in steps:
        a, b = (load_file(f / 'checkpoints' / f'checkpoint-{step}' / 'model.safetensors') for f in (resumed, reference))
        assert all(torch.equal(a[k], b[k]) for k in b)
    set_aside = {p.name for p in (resumed / 'checkpoints').iterdir() if p.name.startswith('incomplete-')}
    assert {f'incomplete-checkpoint-{steps[1]}', f'incomplete-checkpoint-{steps[1]}-2'} <= set_aside   # kept, not deleted


RL = dict(updates=4, steps=4, n_envs=2, minibatch=2, ppo_epochs=1, max_new_tokens=8, checkpoints=2)


def _rl_child(init, root, at, signals, window):
    import sftrl.rl
    update = sftrl.rl.ppo_update
    def reporting(*args, **kwargs): signals.put(1); return update(*args, **kwargs)
    sftrl.rl.ppo_update = reporting
    def saves_update_at(obj, f, *args, **kwargs): return Path(f).name.startswith('trainer.pt') and obj['update'] == at
    if window == 'state':   # the state of update `at` half-written: its policy in the new folder, its trainer.pt not
        _die_within(torch, 'save', saves_update_at)
    if window == 'swap':    # the state of update `at` written whole, the old folder renamed aside, the new one not yet in
        save, rename, whole = torch.save, pathlib.Path.rename, []
        def noting(*args, **kwargs):
            if saves_update_at(*args, **kwargs): whole.append(True)
            return save(*args, **kwargs)
        def dying_after(path, target):
            moved = rename(path, target)
            if whole and path.name == 'state': os.kill(os.getpid(), signal.SIGKILL)
            return moved
        torch.save, pathlib.Path.rename = noting, dying_after
    train_rl(rl_run('smoke', 'gp-l', init=init, **RL), root=root, progress=False, report_to=[])


def _rows(folder) -> pd.DataFrame:
    "Every line of a run's log.jsonl (a line written twice, or cut short, would show)."
    return pd.DataFrame([json.loads(line) for line in (folder / 'log.jsonl').read_text().splitlines(keepends=True)])


def test_rl_survives_kill_9_within_its_state_saves_and_at_random_moments(tmp_path):
    init = str(save_policy(build_text_policy(build_tokenizer(task_texts(n=40), 400), 'smoke', seed=0), tmp_path / 'init'))
    reference = train_rl(rl_run('smoke', 'gp-l', init=init, **RL), root=tmp_path / 'straight', progress=False, report_to=[])
    rng, root = np.random.default_rng(22), tmp_path / 'killed'
    # killed twice saving update 2's state, the run resumes from 1, is killed in update 3 or 4, resumes, is killed again
    kills = [_run_killed(_rl_child, (init, str(root), 2), window, rng) for window in ('state', 'swap', 'random', 'random')]
    assert kills[:3] == [True, True, True]               # every window was really hit (the last may finish first)
    resumed = train_rl(rl_run('smoke', 'gp-l', init=init, **RL), root=root, progress=False, report_to=[])
    pd.testing.assert_frame_equal(_rows(resumed), _rows(reference))           # each update logged once, whole
    checkpoints = rl_checkpoints(reference)
    pd.testing.assert_frame_equal(rl_checkpoints(resumed).drop(columns='path'), checkpoints.drop(columns='path'))
    for update in checkpoints['update']:
        a, b = (load_file(f / f'checkpoint-{update}' / 'model.safetensors') for f in (resumed, reference))
        assert all(torch.equal(a[k], b[k]) for k in b)
    assert [p.name for p in resumed.iterdir() if p.name.startswith('.')] == []   # nothing half-written left beside the state
