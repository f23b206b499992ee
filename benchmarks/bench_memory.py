"""What `sftrl.core.return_freed_memory` costs and saves: training steps of the tiny text policy (random weights) on
batches of changing lengths, as a PPO update on V-IRL chains sees them, each setting in a fresh process, interleaved:

- `default`: glibc's allocator as it comes (`SFTRL_MALLOC=default`): its threshold for a memory map of a block's own
  rises with the largest block freed, and freed blocks below it stay on the heap;
- `threshold`: the threshold fixed at 128 KiB (`mallopt`), every large block in a map of its own;
- `sftrl`: glibc's defaults with sftrl's thread returning the heap's free pages every 30 s (`malloc_trim`), what every
  process that imports sftrl runs with.

Each process prints its wall and CPU seconds, its peak resident memory and what it holds after the last step.
All settings do the same arithmetic on the same seeded batches, so their losses are printed to show they agree.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_memory.py [steps] [rounds]   (prints figures; not a test)
"""
import json
import os
import subprocess
import sys

STEPS = """
import ctypes, json, os, resource, sys, time
if sys.argv[2] == 'threshold': ctypes.CDLL('libc.so.6').mallopt(-3, 128 * 1024)   # M_MMAP_THRESHOLD
import numpy as np, torch
from sftrl.models import build_text_policy, build_tokenizer, task_texts
steps = int(sys.argv[1])
policy = build_text_policy(build_tokenizer(task_texts(20)), 'tiny')
model = policy.model.train()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
rng = np.random.default_rng(0)
vocab = model.config.vocab_size
rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**30
wall, cpu, losses = time.perf_counter(), time.process_time(), []
for _ in range(steps):
    lengths = rng.integers(300, 2400, size=8)            # one minibatch of packed V-IRL chains
    ids = torch.as_tensor(rng.integers(0, vocab, size=(8, int(lengths.max()))))
    mask = torch.as_tensor(np.arange(ids.shape[1])[None] < lengths[:, None]).long()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
    loss.backward(); optimizer.step(); optimizer.zero_grad(); losses.append(round(loss.item(), 4))
print(json.dumps({'wall_s': time.perf_counter() - wall, 'cpu_s': time.process_time() - cpu,
                  'peak_GB': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 'held_GB': rss(), 'last_loss': losses[-1]}))
"""


def run(setting: str, steps: int) -> dict:
    env = {**os.environ, 'SFTRL_MALLOC': 'sftrl' if setting == 'sftrl' else 'default'}
    out = subprocess.run([sys.executable, '-c', STEPS, str(steps), setting], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == '__main__':
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    results = {'default': [], 'threshold': [], 'sftrl': []}
    for r in range(rounds):
        for setting in results:
            results[setting].append(run(setting, steps))
            print(f"round {r + 1}, {setting:7}: " + ", ".join(f"{k} {v:.2f}" for k, v in results[setting][-1].items()), flush=True)
    best = {s: {k: min(x[k] for x in rows) for k in rows[0]} for s, rows in results.items()}
    print(f"\n{steps} steps, best of {rounds} (CPU seconds, peak and held resident GB):")
    for setting, b in best.items():
        print(f"  {setting:9} {b['cpu_s']:7.1f} s ({b['cpu_s'] / best['default']['cpu_s']:.2f} of default)   "
              f"peak {b['peak_GB']:.2f}   held {b['held_GB']:.2f}   last loss {b['last_loss']}")
