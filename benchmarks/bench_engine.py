"""Evaluation with a model, today's path against the generation engine: a GP-L and a V-IRL-L evaluation of the tiny
text policy, or GP-VL and V-IRL-VL of the tiny vision policy (random weights: every answer runs to `max_new_tokens` and every episode uses all its tries, 5 for GP-L
and 2 for V-IRL-L: the worst case), played by `generate` in batches of 16 (16 episodes in flight) and by `GenerationEngine` (the episodes in
flight answered in one call, each chat's keys and values kept between tries, the shared prompt prefix run once; as
evaluation runs it, re-tokenizing each chat, which a random model's answers make costlier than a trained model's),
and by the engine with bf16 weights (`precision='bf16'`, opt-in: not `generate`'s numbers), alternating in one run. Prints wall and CPU seconds (the machine is shared: CPU seconds of this one-thread process are
the steadier measure), generated tokens per second and the ratios, and checks that both played the same rows.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_engine.py [episodes=200] [repeats=1] [tasks=gp-l,virl-l]
(tasks among gp-l, virl-l, gp-vl, virl-vl) [checkpoint: a trained model's folder in place of the random policies]
"""
import sys
import time

import torch

from sftrl.evaluate import evaluate
from sftrl.generate import ModelPolicy, generate, model_policy
from sftrl.models import build_text_policy, build_tokenizer, build_vision_policy, count_parameters, load_policy, task_texts
from sftrl.tasks import get_task


def play(policy, task, n, engine, max_new_tokens=80):
    "Wall s, CPU s, generated tokens and the step rows of one greedy evaluation; `engine` None (`generate`), 'fp32' or 'bf16'."
    answer = model_policy(policy, max_new_tokens=max_new_tokens, precision=engine) if engine else \
        ModelPolicy(policy, max_new_tokens=max_new_tokens, batch_size=16, generate=generate)
    wall, cpu = time.perf_counter(), time.process_time()
    steps, _ = evaluate(answer, task, 'id', n=n, batch_size=128 if engine else 16, progress=False)
    return time.perf_counter() - wall, time.process_time() - cpu, answer.tokens.generated, steps


if __name__ == '__main__':
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    tasks = sys.argv[3].split(',') if len(sys.argv) > 3 else ['gp-l', 'virl-l']
    torch.manual_seed(0)
    tokenizer = build_tokenizer(task_texts(n=200), 512)
    policies = {False: build_text_policy(tokenizer, 'tiny', seed=0), True: build_vision_policy(tokenizer, 'tiny', seed=0)}
    if len(sys.argv) > 4:   # a trained checkpoint: its answers are shorter and end, as in the study
        trained = load_policy(sys.argv[4])
        policies[trained.kind == 'vision'] = trained
        print(f"checkpoint {sys.argv[4]}")
    print(f"tiny text policy: {count_parameters(policies[False].model) / 1e6:.2f} M parameters, vision "
          f"{count_parameters(policies[True].model) / 1e6:.2f} M, {torch.get_num_threads()} thread(s), "
          f"{n} episodes, 80 new tokens per answer, greedy")
    for task in tasks:
        policy = policies[get_task(task).vision]
        players = {'today': None, 'engine': 'fp32', 'engine bf16': 'bf16'}
        results = {name: [] for name in players}
        for r in range(repeats):
            for name in (list(players) if r % 2 == 0 else list(players)[::-1]):
                wall, cpu, tokens, steps = play(policy, task, n, players[name])
                results[name].append((wall, cpu, tokens, steps))
                print(f"{task:7s} {name:11s}: {wall:7.1f} s wall {cpu:7.1f} s CPU  {tokens / wall:6.0f} generated tok/s wall"
                      f"  {tokens / cpu:6.0f} per CPU s  ({len(steps)} steps)", flush=True)
        best = {k: (min(x[0] for x in v), min(x[1] for x in v)) for k, v in results.items()}
        for name in ('engine', 'engine bf16'):
            same = all(e[3].to_dict('records') == t[3].to_dict('records') for e, t in zip(results[name], results['today']))
            print(f"{task:7s} {name} / today: {best['today'][0] / best[name][0]:.2f}x wall, "
                  f"{best['today'][1] / best[name][1]:.2f}x CPU (best of {repeats}); rows identical: {same}", flush=True)
