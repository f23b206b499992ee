"""RL throughput on the tiny text policy (random weights), side by side in one run and interleaved:

1. rollouts: turns/s and tokens/s of `collect` playing GP-L with its own sampling (each chat's ids kept, the old
   log-probabilities and values read while generating), through `sftrl.generate.GenerationEngine` (each chat's keys
   and values kept between tries; what `train_rl` uses on a CPU) keeping the old numbers as it generates and, as it
   did before, scored after the rollout (one packed forward per chain), and through `generate` re-encoding each chat,
   scored after;
2. the PPO update: trained turn tokens/s (each turn's prompt and answer, as the per-turn update forwards them) of
   today's per-turn scoring against episode-packed scoring (one sequence per chain), in float32 and under bf16
   autocast, on the same rollout, from the same weights, with the ratios; and, as the bar the update should
   clear, an SFT step's tokens/s (16 x 300 tokens, forward, backward and Adam) in both precisions;
3. end to end: one update of the tiny recipe's `train_rl` (rollouts through the engine, then the packed update) under
   `SFTRL_PRECISION=fp32` and `=bf16` (bf16 autocast, the engine's bf16 weights), interleaved, with their logs' numbers;
4. as a reference point, one whole PPO iteration (rollout + update) against TRL's `GRPOTrainer` on the same model,
   task and verifier — single-turn, its own loop — with the same number of answers per iteration, answer length,
   temperature and optimizer steps.

All times are CPU seconds of this one process (the machine is shared: wall time would measure the neighbours).

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_rl.py [update,rollouts,precision,iteration]   (prints figures; not a test)
"""
import copy
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
from accelerate import Accelerator
from datasets import Dataset

from sftrl.models import build_text_policy, build_tokenizer, count_parameters, save_policy, task_texts
from sftrl.generate import GenerationEngine, generate
from sftrl.rl import ActorCritic, ValueHead, chains, collect, hidden_size, ppo_update, rl_log, rl_run, train_rl
from sftrl.tasks import make_env, start_episode, training_seeds


def rollouts(policy, head, n_envs, steps=64, max_new_tokens=64, rounds=2):
    "Rollout turns/s of the ways `collect` plays, interleaved, best of `rounds`."
    best = {}
    for _ in range(rounds):
        for name, make, rescore in (('generate, scored after', lambda: generate, False), ('own sampling', lambda: None, False),
                                    ('engine, scored after', GenerationEngine, True), ('engine, numbers kept', GenerationEngine, False)):
            start = time.process_time()
            rollout = collect(policy, head, 'gp-l', steps, n_envs, seed=0, temperature=1.0, max_new_tokens=max_new_tokens, generator=make(),
                              rescore=rescore)
            seconds = time.process_time() - start
            tokens = sum(len(t.prompt_ids) + len(t.answer_ids) for t in rollout.turns)
            best[name] = max(best.get(name, (0,)), (len(rollout.turns) / seconds, rollout.generation.generated / seconds, tokens / seconds))
    return best


def update_seconds(policy, head, rollout, packed, epochs=1, precision='no'):
    "CPU seconds of one PPO update (minibatch 16, `epochs` epochs) on `rollout`, from copies of the same weights, in `precision` ('no' or 'bf16' autocast)."
    model, value_head = copy.deepcopy(policy.model).train(), copy.deepcopy(head)
    run = rl_run('tiny', 'gp-l', init='unused', minibatch=16, accumulation=1, ppo_epochs=epochs, temperature=1.0)
    optimizer = torch.optim.Adam(list(model.parameters()) + list(value_head.parameters()), lr=1e-5, eps=1e-7)
    start = time.process_time()
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=1)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=precision == 'bf16'):   # what Accelerator(mixed_precision='bf16') does on a CPU
        stats = ppo_update(ActorCritic(model, value_head), optimizer, accelerator, rollout, run,
                           policy.tokenizer.pad_token_id, np.random.default_rng(0), packed=packed)
    return time.process_time() - start, stats['trained'].total


def updates(policy, head, steps=64, n_envs=16, max_new_tokens=128, rounds=2):
    "CPU seconds of today's update and the packed one (float32, and packed under bf16 autocast) on one tiny-recipe rollout (temperature 1, 128 new tokens), interleaved."
    rollout = collect(policy, head, 'gp-l', steps, n_envs, seed=0, temperature=1.0, max_new_tokens=max_new_tokens)
    turn_tokens = sum(len(t.prompt_ids) + len(t.answer_ids) for t in rollout.turns)
    ways = [(False, 'no'), (True, 'no'), (True, 'bf16')]
    seconds = {way: [] for way in ways}
    for _ in range(rounds):
        for packed, precision in ways:
            took, _ = update_seconds(policy, head, rollout, packed, precision=precision)
            seconds[packed, precision].append(took)
    return rollout, turn_tokens, {way: min(s) for way, s in seconds.items()}


def sft_tokens_per_second(policy, bf16, rows=16, length=300, steps=3):
    "Tokens/s (CPU) of an SFT step on `rows` x `length` tokens (forward, backward, Adam), best of `steps`, in float32 or bf16 autocast."
    model = copy.deepcopy(policy.model).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    ids = torch.randint(0, len(policy.tokenizer), (rows, length), generator=torch.Generator().manual_seed(0))
    best = float('inf')
    for _ in range(steps + 1):   # the first step warms up
        start = time.process_time()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16): loss = model(input_ids=ids, labels=ids).loss
        loss.backward(); optimizer.step(); optimizer.zero_grad()
        best = min(best, time.process_time() - start)
    return rows * length / best


def precisions(policy, steps=128, rounds=2):
    "CPU seconds of one tiny-recipe `train_rl` update (`steps` turns, a step every 128, 2 epochs) under SFTRL_PRECISION=fp32 and =bf16, interleaved, best of `rounds`; each one's first log row."
    seconds, logs = {'fp32': [], 'bf16': []}, {}
    forced = os.environ.get('SFTRL_PRECISION')
    with tempfile.TemporaryDirectory() as out:
        init = save_policy(policy, f'{out}/init')
        for k in range(rounds):
            for precision in seconds:
                os.environ['SFTRL_PRECISION'] = precision
                start = time.process_time()
                folder = train_rl(rl_run('tiny', 'gp-l', init=str(init), updates=1, steps=steps), root=f'{out}/{precision}-{k}',
                                  progress=False, report_to=[])
                seconds[precision].append(time.process_time() - start)
                logs[precision] = rl_log(folder).iloc[0]
    if forced is None: del os.environ['SFTRL_PRECISION']
    else: os.environ['SFTRL_PRECISION'] = forced
    return {p: min(s) for p, s in seconds.items()}, logs


ANSWERS = 40   # model answers per iteration: turns for PPO (8 environments × 5 tries), completions for GRPO (5 prompts × 8)


def ppo_iteration(policy, n_envs=8):
    "One sftrl PPO iteration as `train_rl` runs it on a CPU: a 40-turn multi-turn rollout through the engine, then 4 packed epochs of minibatch 20 (8 optimizer steps)."
    policy = copy.deepcopy(policy)
    head = ValueHead(hidden_size(policy.model))
    run = rl_run('tiny', 'gp-l', init='unused', minibatch=ANSWERS // 2, accumulation=1, ppo_epochs=4, temperature=0.2)
    optimizer = torch.optim.Adam(list(policy.model.parameters()) + list(head.parameters()), lr=1e-5, eps=1e-7)
    start = time.process_time()
    rollout = collect(policy, head, 'gp-l', ANSWERS, n_envs, seed=0, temperature=0.2, max_new_tokens=64, generator=GenerationEngine())
    ppo_update(ActorCritic(policy.model, head), optimizer, Accelerator(cpu=True, gradient_accumulation_steps=run.accumulation), rollout, run, policy.tokenizer.pad_token_id,
               np.random.default_rng(0))
    seconds = time.process_time() - start
    turns = sum(len(t.prompt_ids) + len(t.answer_ids) for t in rollout.turns)
    return seconds, len(rollout.episodes), len(rollout.turns), rollout.generation.generated, turns


def grpo_iteration(policy, num_generations=8):
    "One TRL GRPO iteration on GP-L: 5 prompts × 8 completions scored by sftrl's verifier, reused for 8 optimizer steps."
    from transformers import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer
    seeds = training_seeds(0, ANSWERS // num_generations)
    prompts = [start_episode(make_env('gp-l', 'train'), 'gp-l', 'train', s)[1]['messages'] for s in seeds]

    def verifier_reward(completions, seed, **kwargs):
        "The GP-L verifier's reward for a first try at the hand dealt from `seed`."
        rewards = []
        for completion, s in zip(completions, seed):
            env = make_env('gp-l', 'train'); start_episode(env, 'gp-l', 'train', s)
            rewards.append(float(env.step(completion[0]['content'])[1]))
        return rewards

    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter('ignore')
        config = GRPOConfig(output_dir=out, use_cpu=True, report_to='none', save_strategy='no', logging_steps=1,
                            learning_rate=1e-5, max_steps=8, per_device_train_batch_size=ANSWERS // 2, steps_per_generation=2,
                            num_iterations=4, num_generations=num_generations, max_completion_length=64,
                            temperature=0.2, top_k=0, beta=0.0, epsilon=0.1, disable_tqdm=True, seed=0,
                            bf16=False)   # TRL's default bf16 autocast is ~13x slower on this CPU (sftrl.sft)
        trainer = GRPOTrainer(model=copy.deepcopy(policy.model), reward_funcs=verifier_reward, args=config,
                              train_dataset=Dataset.from_dict({'prompt': prompts, 'seed': seeds}),
                              processing_class=policy.tokenizer)
        trainer.remove_callback(PrinterCallback)
        start = time.process_time()
        trainer.train()
        seconds = time.process_time() - start
    first = trainer.state.log_history[0]          # the generation round's metrics
    generated = round(first['completions/mean_length'] * ANSWERS)
    return seconds, ANSWERS, ANSWERS, generated, int(first['num_tokens'])


if __name__ == '__main__':
    tokenizer = build_tokenizer(task_texts(n=200), 512)
    policy = build_text_policy(tokenizer, 'tiny', seed=0)
    head = ValueHead(hidden_size(policy.model))
    print(f"tiny text policy: {count_parameters(policy.model) / 1e6:.2f} M parameters, {torch.get_num_threads()} threads; GP-L")
    parts = sys.argv[1].split(',') if len(sys.argv) > 1 else ['update', 'rollouts', 'iteration']
    if 'update' in parts:
        rollout, turn_tokens, best = updates(policy, head)
        turns, chains_ = len(rollout.turns), len(chains(rollout.turns))
        print(f"PPO update, one epoch of minibatch 16 on {turns} turns ({chains_} chains, {turn_tokens} turn tokens), best of 2 interleaved:")
        for way, name in (((False, 'no'), "today's (per turn)"), ((True, 'no'), 'episode-packed'), ((True, 'bf16'), 'packed, bf16 autocast')):
            print(f"  {name:22s} {best[way]:6.1f} CPU s  {turn_tokens / best[way]:7.0f} trained turn tok/s  "
                  f"{best[False, 'no'] / best[way]:.2f}x today's")
        for bf16 in (False, True):
            print(f"  SFT step, 16 x 300 tokens, {'bf16 autocast' if bf16 else 'float32':13s} {sft_tokens_per_second(policy, bf16):7.0f} tok/s")
    for n_envs in ((4, 16) if 'rollouts' in parts else ()):
        for name, (turns, generated, processed) in rollouts(policy, head, n_envs).items():
            print(f"rollout, {n_envs:2d} environments, {name:22s} {turns:6.2f} turns/s, {generated:6.0f} generated tok/s, {processed:6.0f} turn tok/s")
    if 'precision' in parts:
        best, logs = precisions(policy)
        print(f"one tiny-recipe update end to end (128 turns of up to 128 tokens, then 2 epochs), best of 2 interleaved:")
        for precision, seconds in best.items():
            row = logs[precision]
            print(f"  {precision}: {seconds:6.1f} CPU s ({best['fp32'] / seconds:.2f}x fp32's)  policy loss {row.policy_loss:+.5f}  "
                  f"value loss {row.value_loss:.4f}  approx KL {row.approx_kl:.5f}  rollout reward {row.mean_reward:.3f}")
    if 'iteration' not in parts: sys.exit()
    print(f"\none whole iteration (rollout + update), {ANSWERS} answers of up to 64 tokens at temperature 0.2, "
          f"then 8 optimizer steps of {ANSWERS // 2} answers (each answer trained on 4 times):")
    for name, (seconds, episodes, answers, generated, tokens) in (('sftrl PPO, multi-turn', ppo_iteration(policy)),
                                                                   ('TRL GRPOTrainer, single-turn', grpo_iteration(policy))):
        print(f"{name:30s} {seconds:6.1f} s: {episodes / seconds:5.2f} episodes/s ({episodes}), {answers / seconds:5.2f} answers/s, "
              f"{generated / seconds:5.0f} generated tok/s, {tokens / seconds:5.0f} prompt+answer tok/s")
    print("(an sftrl episode is up to 5 tries with the verifier's feedback in the prompt; a GRPO episode is one answer)")
