"""RL throughput on the tiny text policy (random weights): rollout turns/s and tokens/s (batched generation plus the
scoring pass), and PPO update tokens/s (forward and backward over the buffer, 4 epochs), side by side in one run,
for GP-L at two numbers of environments played together; then, as a reference point, one whole PPO iteration
(rollout + update) against TRL's `GRPOTrainer` on the same model, task and verifier — single-turn, its own loop —
with the same number of answers per iteration, answer length, temperature and optimizer steps.

Run: .venv/bin/python benchmarks/bench_rl.py   (prints figures; not a test)
"""
import copy
import tempfile
import time
import warnings

import numpy as np
import torch
from accelerate import Accelerator
from datasets import Dataset

from sftrl.models import build_text_policy, build_tokenizer, count_parameters, task_texts
from sftrl.rl import ActorCritic, ValueHead, collect, hidden_size, ppo_update, rl_run
from sftrl.tasks import make_env, start_episode, training_seeds


def measure(policy, head, n_envs, steps=32, max_new_tokens=64):
    "Rollout turns/s and tokens/s, then PPO update tokens/s, for one buffer of `steps` turns."
    start = time.perf_counter()
    rollout = collect(policy, head, 'gp-l', steps, n_envs, seed=0, max_new_tokens=max_new_tokens)
    rollout_seconds = time.perf_counter() - start
    tokens = sum(len(t.prompt_ids) + len(t.answer_ids) for t in rollout.turns)
    run = rl_run('tiny', 'gp-l', init='unused', minibatch=16, accumulation=1, ppo_epochs=4, temperature=0.2)
    optimizer = torch.optim.Adam(list(policy.model.parameters()) + list(head.parameters()), lr=1e-5, eps=1e-7)
    start = time.perf_counter()
    stats = ppo_update(ActorCritic(policy.model, head), optimizer, Accelerator(cpu=True, gradient_accumulation_steps=run.accumulation), rollout, run, policy.tokenizer.pad_token_id,
                       np.random.default_rng(0))
    update_seconds = time.perf_counter() - start
    return (len(rollout.turns) / rollout_seconds, rollout.generation.generated / rollout_seconds, tokens / rollout_seconds,
            stats['trained'].total / update_seconds, len(rollout.episodes))


ANSWERS = 40   # model answers per iteration: turns for PPO (8 environments × 5 tries), completions for GRPO (5 prompts × 8)


def ppo_iteration(policy, n_envs=8):
    "One sftrl PPO iteration: a 40-turn multi-turn rollout, then 4 epochs of minibatch 20 (8 optimizer steps)."
    policy = copy.deepcopy(policy)
    head = ValueHead(hidden_size(policy.model))
    run = rl_run('tiny', 'gp-l', init='unused', minibatch=ANSWERS // 2, accumulation=1, ppo_epochs=4, temperature=0.2)
    optimizer = torch.optim.Adam(list(policy.model.parameters()) + list(head.parameters()), lr=1e-5, eps=1e-7)
    start = time.perf_counter()
    rollout = collect(policy, head, 'gp-l', ANSWERS, n_envs, seed=0, temperature=0.2, max_new_tokens=64)
    ppo_update(ActorCritic(policy.model, head), optimizer, Accelerator(cpu=True, gradient_accumulation_steps=run.accumulation), rollout, run, policy.tokenizer.pad_token_id,
               np.random.default_rng(0))
    seconds = time.perf_counter() - start
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
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    first = trainer.state.log_history[0]          # the generation round's metrics
    generated = round(first['completions/mean_length'] * ANSWERS)
    return seconds, ANSWERS, ANSWERS, generated, int(first['num_tokens'])


if __name__ == '__main__':
    tokenizer = build_tokenizer(task_texts(n=200), 512)
    policy = build_text_policy(tokenizer, 'tiny', seed=0)
    head = ValueHead(hidden_size(policy.model))
    print(f"tiny text policy: {count_parameters(policy.model) / 1e6:.2f} M parameters, {torch.get_num_threads()} threads; "
          f"GP-L, 32 turns per buffer, 64 new tokens per answer, 4 PPO epochs, minibatch 16")
    results = {}
    for n_envs in (4, 16):
        turns, generated, processed, trained, episodes = measure(policy, head, n_envs)
        results[n_envs] = turns
        print(f"{n_envs:2d} environments: rollout {turns:6.2f} turns/s, {generated:7.0f} generated tok/s, "
              f"{processed:7.0f} turn tok/s; PPO update {trained:7.0f} trained tok/s; {episodes} episodes finished")
    print(f"rollout turns/s, 16 environments / 4: {results[16] / results[4]:.2f}x")
    print(f"\none whole iteration (rollout + update), {ANSWERS} answers of up to 64 tokens at temperature 0.2, "
          f"then 8 optimizer steps of {ANSWERS // 2} answers (each answer trained on 4 times):")
    for name, (seconds, episodes, answers, generated, tokens) in (('sftrl PPO, multi-turn', ppo_iteration(policy)),
                                                                   ('TRL GRPOTrainer, single-turn', grpo_iteration(policy))):
        print(f"{name:30s} {seconds:6.1f} s: {episodes / seconds:5.2f} episodes/s ({episodes}), {answers / seconds:5.2f} answers/s, "
              f"{generated / seconds:5.0f} generated tok/s, {tokens / seconds:5.0f} prompt+answer tok/s")
    print("(an sftrl episode is up to 5 tries with the verifier's feedback in the prompt; a GRPO episode is one answer)")
