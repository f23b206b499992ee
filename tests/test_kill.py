"""kill -9 at a random moment (issue 22): an evaluation process killed mid-run, several times, keeps every episode it
finished, leaves at most its last line half-written, and resumes to exactly the rows of an uninterrupted run."""
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
