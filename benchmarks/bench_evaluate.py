"""Evaluation throughput: episodes/s of `evaluate` with the oracle policy (the environments' and the evaluator's own
cost, no model), GP-L and V-IRL-L at two batch sizes, the vision tasks at small resolutions, the cost of the JSONL log
and of resuming a finished one, and the GeneralPoints overlap measurement. The tiny-policy number comes with the
rollout chapter (batched generation).

Run: .venv/bin/python benchmarks/bench_evaluate.py   (prints figures; not a test)
"""
import tempfile
import time
from pathlib import Path

from sftrl.evaluate import evaluate, oracle_policy, prompt_overlap, random_mistake_policy


def episodes_per_second(task, split='id', n=200, batch_size=16, policy=None, **env_kwargs):
    "Episodes/s and steps/s of one evaluation, timed on its second run (solver, city and card-image caches warm)."
    policy = policy or oracle_policy(task)
    evaluate(policy, task, split, n=n, batch_size=batch_size, progress=False, env_kwargs=env_kwargs)
    start = time.perf_counter()
    steps, episodes = evaluate(policy, task, split, n=n, batch_size=batch_size, progress=False, env_kwargs=env_kwargs)
    elapsed = time.perf_counter() - start
    return n / elapsed, len(steps) / elapsed


def log_cost(task='gp-l', n=200):
    "Seconds to evaluate with and without the JSONL log, and to read a finished log back (resume with nothing left)."
    policy = random_mistake_policy(task, p=0.5)
    start = time.perf_counter(); evaluate(policy, task, 'id', n=n, progress=False); plain = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'log.jsonl'
        start = time.perf_counter(); evaluate(policy, task, 'id', n=n, out=path, progress=False); logged = time.perf_counter() - start
        start = time.perf_counter(); evaluate(policy, task, 'id', n=n, out=path, progress=False); resumed = time.perf_counter() - start
        size = path.stat().st_size
    return plain, logged, resumed, size


if __name__ == '__main__':
    for task in ('gp-l', 'virl-l'):
        for batch_size in (1, 16):
            eps, sps = episodes_per_second(task, batch_size=batch_size)
            print(f"{task:8s} id, oracle, batch {batch_size:2d}:       {eps:8.1f} episodes/s  {sps:8.1f} steps/s  (n=200)")
    eps, sps = episodes_per_second('gp-l', policy=random_mistake_policy('gp-l', p=0.5))
    print(f"gp-l     id, random mistakes p=0.5:  {eps:8.1f} episodes/s  {sps:8.1f} steps/s  (n=200)")
    for resolution in (256, 1200):
        eps, sps = episodes_per_second('gp-vl', n=40, resolution=resolution)
        print(f"gp-vl    id, oracle, {resolution:4d} px:        {eps:8.1f} episodes/s  {sps:8.1f} steps/s  (n=40)")
    eps, sps = episodes_per_second('virl-vl', n=8, resolution=112)
    print(f"virl-vl  id, oracle, 112 px views:   {eps:8.1f} episodes/s  {sps:8.1f} steps/s  (n=8)")
    plain, logged, resumed, size = log_cost()
    print(f"gp-l 200 episodes: {plain:.2f} s in memory, {logged:.2f} s with the JSONL log ({size / 1e3:.0f} kB), "
          f"{resumed:.2f} s to resume a finished log")
    start = time.perf_counter()
    share = prompt_overlap('gp-l', 'id', 200, 10_000)
    print(f"prompt_overlap(gp-l, 200 evaluation vs 10,000 training episodes) = {share:.3f} in {time.perf_counter() - start:.1f} s")
