"""Evaluation with a model: episodes/s and generated tokens/s of `evaluate` driving the tiny text policy (random
weights, so every answer runs to `max_new_tokens`: the worst case) on GP-L and V-IRL-L, at generation batch 1 and 16
side by side in one run, greedy and sampled. Episode lengths depend on what the random model happens to write,
so compare the generated tokens/s (per-row seeded Gumbel noise, sftrl.generate).

Run: .venv/bin/python benchmarks/bench_generate.py   (prints figures; not a test)
"""
import time

import torch

from sftrl.evaluate import evaluate
from sftrl.generate import model_policy
from sftrl.models import build_text_policy, build_tokenizer, count_parameters, task_texts


def measure(policy, task, n, batch_size, temperature, max_new_tokens=64):
    "Episodes/s, generated tokens/s and tokens processed per second of one evaluation."
    answer = model_policy(policy, temperature=temperature, max_new_tokens=max_new_tokens, batch_size=batch_size)
    start = time.perf_counter()
    evaluate(answer, task, 'id', n=n, batch_size=batch_size, viter=1, progress=False)
    elapsed = time.perf_counter() - start
    return n / elapsed, answer.tokens.generated / elapsed, answer.tokens.total / elapsed


if __name__ == '__main__':
    torch.manual_seed(0)
    tokenizer = build_tokenizer(task_texts(n=200), 512)
    policy = build_text_policy(tokenizer, 'tiny', seed=0)
    print(f"tiny text policy: {count_parameters(policy.model) / 1e6:.2f} M parameters, {torch.get_num_threads()} threads, "
          f"64 new tokens per answer, one verified try per position")
    for task, n in (('gp-l', 32), ('virl-l', 8)):
        rates = {}
        for batch_size in (1, 16):
            for temperature in (0.0, 0.2):
                eps, gen, total = measure(policy, task, n, batch_size, temperature)
                rates[batch_size, temperature] = gen
                print(f"{task:7s} batch {batch_size:2d} T={temperature:.1f}: {eps:7.2f} episodes/s  {gen:8.0f} generated tok/s"
                      f"  {total:9.0f} processed tok/s  (n={n})")
        print(f"{task:7s} generated tok/s, batch 16 / batch 1 (greedy): {rates[16, 0.0] / rates[1, 0.0]:.2f}x;"
              f" sampling / greedy (batch 16): {rates[16, 0.2] / rates[16, 0.0]:.2f}x")
