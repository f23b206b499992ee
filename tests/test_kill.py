"""kill -9 at a random moment (issue 22): an evaluation process killed mid-run, several times, keeps every episode it
finished, leaves at most its last line half-written, and resumes to exactly the rows of an uninterrupted run (a resume
that cuts that line loses nothing to a kill either); SFT and RL runs killed at random moments and inside their
checkpoint writes resume to the uninterrupted run's weights and logs; `sftrl reproduce` killed while training and while
evaluating leaves its kernel to exit, keeps what it finished untouched, and ends with the uninterrupted figure CSV,
evaluations, logs and ledger."""
import dataclasses
import gzip
import hashlib
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
import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback, TrainerState

from sftrl.cli import main
from sftrl.evaluate import evaluate, load_evaluation, random_mistake_policy, read_log
from sftrl.ledger import finished
from sftrl.models import build_text_policy, build_tokenizer, save_policy, task_texts
from sftrl.rl import rl_checkpoints, rl_run, train_rl
from sftrl.runs import CheckpointCompute, checkpoint_table
from sftrl.sft import sft_run, train_sft
from sftrl.tasks import evaluation_openings

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


def _resume_dying_in_a_rewrite(log):
    "Resume the evaluation of `log`, SIGKILLed the moment it opens the log to write it again whole (opened, emptied, nothing written yet)."
    _die_within(pathlib.Path, 'write_bytes', lambda path, data: path == log, lambda path, data: open(path, 'wb').close())
    evaluate(random_mistake_policy('gp-l', p=0.6, seed=4), 'gp-l', 'id', n=N, batch_size=BATCH, out=log, progress=False)


def test_resuming_a_log_cut_mid_line_keeps_its_finished_episodes_through_a_kill(tmp_path):
    """A log a kill cut mid-line is shortened in place to its last whole line before the evaluation goes on; it used to
    be written again whole, and a kill inside that write emptied it: every finished episode lost."""
    log = tmp_path / 'eval.jsonl'
    evaluate(random_mistake_policy('gp-l', p=0.6, seed=4), 'gp-l', 'id', n=N // 2, batch_size=BATCH, out=log, progress=False)
    log.write_text(log.read_text() + log.read_text().splitlines()[-1][:40])    # the next episode's first line, cut
    finished_before = set(read_log(log)[1])
    child = multiprocessing.get_context('fork').Process(target=_resume_dying_in_a_rewrite, args=(log,))
    child.start(); child.join(120)
    assert finished_before <= set(read_log(log)[1])
    assert child.exitcode == 0 and set(read_log(log)[1]) == set(range(N))      # and it went on to the end


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


# --- sftrl reproduce --------------------------------------------------------------------------------------------
# `sftrl reproduce` runs each experiment notebook in a Jupyter kernel it starts. The test SIGKILLs the command itself at
# seeded random moments (its kernel sees its parent gone and exits within about a second: ipykernel's parent poller),
# checks what is on disk, restarts the command, and compares the end with an uninterrupted run's.

# the cheapest notebook, at one learning rate: one short RL run from the cached smoke base, its checkpoints evaluated
COMMAND = ['reproduce', '--preset', 'smoke', '--only', 'fig09_rl_without_sft', '--set', 'learning_rates=[1e-6]',
           '--root', 'runs']   # its runs here; $SFTRL_RUNS only caches the bases
EXPERIMENT = COMMAND[4]


def _reproduce_child(folder: Path):
    "`sftrl` COMMAND run in `folder`: its runs/, figures and ledger there."
    os.chdir(folder)
    os.environ['SFTRL_LEDGER'] = str(folder / 'ledger')           # a ledger of its own: its writes are checked too
    os.environ.setdefault('SFTRL_RUNS', str(Path(__file__).resolve().parents[1] / 'runs'))   # the smoke bases' cache
    stderr = os.open(folder.with_suffix('.stderr'), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(stderr, 1); os.dup2(stderr, 2)
    sys.exit(main(COMMAND))


def _reproduce(folder: Path):
    "The command started in a child forked from this process (sftrl imported already: a fresh interpreter spends seconds importing)."
    import papermill, sftrl.study  # noqa: F401  imported here once: the children forked after inherit them
    folder.mkdir(exist_ok=True)
    child = multiprocessing.get_context('fork').Process(target=_reproduce_child, args=(folder,))
    child.start()
    return child


def _finish(folder: Path):
    "Run reproduce in `folder` to its end."
    child = _reproduce(folder)
    child.join(600)
    assert child.exitcode == 0, folder.with_suffix('.stderr').read_text()[-3000:]


def _progress(folder: Path) -> tuple[int, int]:
    "How far reproduce in `folder` is: RL updates logged, evaluation episodes finished."
    runs = folder / 'runs' / 'smoke'
    return (sum(len(log.read_bytes().splitlines()) for log in runs.glob('rl/*/log.jsonl')),
            sum(log.read_bytes().count(b'"type": "episode"') for log in runs.glob('eval/*.jsonl')))


def _kernels(pid: int) -> list:
    "The live Jupyter kernels process `pid` started (each carries its id in $JPY_PARENT_PID)."
    import psutil
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get('JPY_PARENT_PID') == str(pid) and process.status() != psutil.STATUS_ZOMBIE: found.append(process)
        except psutil.Error: pass   # another user's, or gone
    return found


def _kill_reproduce(folder: Path, at: tuple[int, int], delay: float) -> bool:
    "Start reproduce in `folder`, SIGKILL it `delay` seconds after its progress reaches `at`, check its kernel exits by itself. Whether it was killed."
    child = _reproduce(folder)
    while not all(done >= goal for done, goal in zip(_progress(folder), at)):
        if not child.is_alive(): return False      # it finished first
        time.sleep(0.05)
    time.sleep(delay)
    kernels = _kernels(child.pid)
    os.kill(child.pid, signal.SIGKILL); child.join()
    assert kernels, 'no kernel found at work'
    deadline = time.monotonic() + 20                  # ipykernel polls for its parent every second
    while (alive := [k for k in kernels if k in _kernels(child.pid)]) and time.monotonic() < deadline: time.sleep(0.2)
    for process in alive: process.kill()             # the test fails: a kernel outlived the command that started it
    assert not alive, f'kernels {alive} kept running after their reproduce was killed'
    return child.exitcode == -signal.SIGKILL


def _unreadable(folder: Path, cut_last_line: bool = False) -> list[str]:
    "The files under `folder` that do not read back whole (dot-files: temporary; `incomplete-*`: set aside). `cut_last_line`: a JSON-lines log's last line may lack its end."
    bad = []
    for f in sorted(p for p in folder.rglob('*') if p.is_file()):
        if any(part.startswith(('.', 'incomplete-')) for part in f.relative_to(folder).parts): continue
        try:
            if f.suffix in ('.json', '.ipynb'): json.loads(f.read_text())
            elif f.suffix == '.csv': pd.read_csv(f, comment='#')
            elif f.suffix == '.safetensors': load_file(f)
            elif f.suffix == '.pt': torch.load(f, weights_only=False)
            elif f.suffix in ('.jsonl', '.gz'):
                lines = (gzip.decompress(f.read_bytes()) if f.suffix == '.gz' else f.read_bytes()).decode().splitlines(keepends=True)
                if cut_last_line and f.suffix == '.jsonl' and lines and not lines[-1].endswith('\n'): lines.pop()
                for line in lines: json.loads(line)
        except Exception as e: bad.append(f'{f.relative_to(folder)}: {type(e).__name__}: {e}'[:300])
    return bad


def _fingerprint(files) -> dict:
    return {f: (f.stat().st_ino, f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest()) for f in files}


def _finished_work(folder: Path, reference: Path) -> dict:
    "What reproduce in `folder` had finished (runs that ran to their end, evaluations with every episode, ledger, figures), each file fingerprinted."
    runs, files = folder / 'runs' / 'smoke', []
    for run in (p for p in runs.glob('*/*') if p.is_dir() and finished(p)):
        files += [f for f in run.rglob('*') if f.is_file() and not f.name.startswith('.')]
    for log in runs.glob('eval/*.jsonl'):
        if len(read_log(log)[1]) == len(read_log(reference / log.relative_to(folder))[1]): files.append(log)
    files += [f for top in (folder / 'ledger', runs / 'figures', runs / 'notebooks') if top.exists()
              for f in top.rglob('*') if f.is_file() and not f.name.startswith('.') and f.suffix != '.ipynb']
    return _fingerprint(files)


def _plotted(csv) -> list[str]:
    "A figure CSV's lines but its provenance ('# key: value': commit, wall time, machine)."
    return [line for line in csv.read_text().splitlines(keepends=True) if not line.startswith('# ')]


def _tree(folder: Path, pattern: str) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.glob(pattern) if not p.name.startswith('.'))


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp('reproduce') / 'straight'
    _finish(folder)
    return folder


def test_reproduce_survives_kill_9_at_random_moments(uninterrupted, tmp_path):
    reference, rng = uninterrupted, np.random.default_rng(22)
    updates, episodes = _progress(reference)
    # killed once training (after a drawn RL update), once evaluating (after a drawn episode), each a drawn delay later
    moments = [(rng.integers(1, updates), 0), (updates, rng.integers(episodes // 4, 3 * episodes // 4))]
    folder, kept, kills = tmp_path / 'killed', {}, []
    for at in moments:
        kills.append(_kill_reproduce(folder, at, rng.uniform(0, 0.5)))
        assert _unreadable(folder, cut_last_line=True) == []   # whole files, but for a log's last line
        assert _fingerprint(kept) == kept                       # what was finished at the kill before is untouched
        kept = _finished_work(folder, reference)
    assert all(kills) and kept and not (folder / 'runs' / 'smoke' / 'notebooks' / f'{EXPERIMENT}.done').exists()
    _finish(folder)
    assert _fingerprint(kept) == kept                           # finished work kept, not computed again
    assert _unreadable(folder) == []
    figures = folder / 'runs' / 'smoke' / 'figures' / f'{EXPERIMENT}.csv'
    assert _plotted(figures) == _plotted(reference / figures.relative_to(folder))
    for pattern in ('runs/smoke/eval/*.jsonl', 'runs/smoke/rl/*/log.jsonl', 'ledger/**/*'):
        assert _tree(folder, pattern) == _tree(reference, pattern)
    for log in folder.glob('runs/smoke/eval/*.jsonl'):
        for a, b in zip(load_evaluation(log), load_evaluation(reference / log.relative_to(folder))): pd.testing.assert_frame_equal(a, b)
    for log in folder.glob('runs/smoke/rl/*/log.jsonl'): pd.testing.assert_frame_equal(_rows(log.parent), _rows(reference / log.parent.relative_to(folder)))
    for entry in (p for p in (folder / 'ledger').rglob('*') if p.is_file()):
        assert entry.read_bytes() == (reference / entry.relative_to(folder)).read_bytes(), entry   # the same ledger to commit
