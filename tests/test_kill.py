"""kill -9 at a random moment (issue 22): an evaluation process killed mid-run, several times, keeps every episode it
finished, leaves at most its last line half-written, and resumes to exactly the rows of an uninterrupted run."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd

from sftrl.evaluate import evaluate, load_evaluation, random_mistake_policy, read_log

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


# --- training: SFT ------------------------------------------------------------------------------------------------
# The children are forked from this process (sftrl and the smoke base already imported and loaded: a fresh interpreter
# would spend most of the test importing), and each is killed with SIGKILL: by the test at a seeded random moment, or
# by itself in the middle of a checkpoint's write, the two windows where a kill used to leave a run that could not resume.
import multiprocessing
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import TrainerCallback, TrainerState

from sftrl.sft import CheckpointCompute, checkpoint_table, evaluation_openings, sft_run, train_sft

SFT = dict(examples=24, batch_size=4, checkpoints=3)   # 6 steps, checkpoints at 2, 4 and 6


class _Steps(TrainerCallback):
    "Tell the test each step as it begins."
    def __init__(self, queue): self.queue = queue
    def on_step_begin(self, args, state, control, **kwargs): self.queue.put(state.global_step)


def _die_within(cls, name, when, cut=None):
    "Make `cls.name` SIGKILL its own process when `when(*args)` holds, after writing `cut(*args)` (half a file) if given."
    original = getattr(cls, name)
    def dying(*args, **kwargs):
        if when(*args):
            if cut: cut(*args)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    setattr(cls, name, dying)


def _sft_child(root, queue, window, last_step):
    import sftrl.base
    train = sftrl.base.Trainer.train
    def train_reporting(self, *args, **kwargs):
        self.add_callback(_Steps(queue)); return train(self, *args, **kwargs)
    sftrl.base.Trainer.train = train_reporting
    if window == 'trainer_state':   # the last checkpoint's trainer_state.json cut half-way
        def half(state, path): Path(path).write_text(json.dumps(dataclasses.asdict(state), indent=2)[:200])
        _die_within(TrainerState, 'save_to_json', lambda state, path: state.global_step == last_step, half)
    if window == 'compute':         # the last checkpoint written by transformers, its compute.json not yet
        _die_within(CheckpointCompute, 'record', lambda callback, state: state.global_step == last_step)
    train_sft(sft_run('smoke', 'gp-l', **SFT), root=root, progress=False, report_to=[])


def _run_sft_killed(root, window, rng, last_step) -> bool:
    "Train in a forked child killed in `window` ('random': after a seeded number of steps and a seeded delay); whether it was killed."
    queue = multiprocessing.get_context('fork').Queue()
    child = multiprocessing.get_context('fork').Process(target=_sft_child, args=(str(root), queue, window, last_step))
    child.start()
    if window == 'random':
        steps, wait = int(rng.integers(1, 4)), rng.uniform(0.0, 0.5)
        try:
            for _ in range(steps): queue.get(timeout=300)
            time.sleep(wait)
            os.kill(child.pid, signal.SIGKILL)
        except Exception: pass   # it finished first
    child.join(300)
    return child.exitcode == -signal.SIGKILL


def _log(folder):
    "A run's log.csv without what describes only the last process's session (transformers' summary: its runtime, speeds, mean loss)."
    log = pd.read_csv(folder / 'log.csv')
    return log.drop(columns=[c for c in log.columns if 'runtime' in c or 'per_second' in c or c == 'train_loss']).sort_index(axis=1)


def test_sft_survives_kill_9_at_random_moments_and_within_its_checkpoint_writes(tmp_path):
    evaluation_openings('gp-l')                           # computed once here, inherited by every child
    reference = train_sft(sft_run('smoke', 'gp-l', **SFT), root=tmp_path / 'straight', progress=False, report_to=[])
    last_step = int(checkpoint_table(reference).step.max())
    rng, root = np.random.default_rng(22), tmp_path / 'killed'
    kills = [_run_sft_killed(root, window, rng, last_step) for window in ('random', 'random', 'trainer_state', 'compute')]
    assert kills[2:] == [True, True] and any(kills[:2])   # every window was really hit
    resumed = train_sft(sft_run('smoke', 'gp-l', **SFT), root=root, progress=False, report_to=[])
    pd.testing.assert_frame_equal(checkpoint_table(resumed).drop(columns='path'), checkpoint_table(reference).drop(columns='path'))
    pd.testing.assert_frame_equal(_log(resumed), _log(reference))
    for step in checkpoint_table(reference).step:
        a, b = (load_file(f / 'checkpoints' / f'checkpoint-{step}' / 'model.safetensors') for f in (resumed, reference))
        assert all(torch.equal(a[k], b[k]) for k in b)
    set_aside = sorted(p.name for p in (resumed / 'checkpoints').iterdir() if p.name.startswith('incomplete-'))
    assert set_aside == [f'incomplete-checkpoint-{last_step}', f'incomplete-checkpoint-{last_step}-2']   # kept, not deleted
