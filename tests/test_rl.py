"RL beyond the chapter (data parallel over 2 CPU processes: tests/test_launch.py): masks, scripted rollouts on V-IRL, bad runs."

import json

import pytest
import torch

from sftrl.models import build_text_policy, build_tokenizer, task_texts
from sftrl.rl import ActorCritic, Turn, ValueHead, collect, hidden_size, rl_run, score, train_rl
from sftrl.tasks import oracle_answer


@pytest.fixture(scope='module')
def policy():
    return build_text_policy(build_tokenizer(task_texts(n=40), 400), 'smoke', seed=0)


def test_score_reads_only_the_answer_tokens(policy):
    head = ValueHead(hidden_size(policy.model))
    tok = policy.tokenizer
    prompt = tok.apply_chat_template([{'role': 'user', 'content': 'Cards: 1 2 3 4'}, {'role': 'assistant', 'content': 'x'},
                                      {'role': 'user', 'content': 'You failed this trial because of x'}],
                                     add_generation_prompt=True, tokenize=True, return_dict=True)['input_ids']
    answer = tok('{"formula": "1*2*3*4=24"}')['input_ids'] + [tok.eos_token_id]
    turn = Turn(prompt, answer, [1.0] * len(answer), None, 0.0, 0.0)
    with torch.no_grad():
        logprob, entropy, value = score(ActorCritic(policy.model, head), [turn], 0.2, tok.pad_token_id)
        logits = policy.model(torch.tensor([prompt + answer])).logits[0] / 0.2
    manual = torch.log_softmax(logits.float(), -1)[len(prompt) - 1:-1].gather(-1, torch.tensor(answer)[:, None]).sum()
    assert torch.isclose(logprob[0], manual, atol=1e-4)
    other = Turn(prompt[:-3] + [tok.pad_token_id] * 3, answer, [0.0] * len(answer), None, 0.0, 0.0)
    assert score(ActorCritic(policy.model, head), [other], 0.2, tok.pad_token_id)[0].item() == 0.0   # zero weights: nothing counted


def test_virl_rollout_with_the_expert_succeeds_at_every_point(policy):
    def expert(policy, batch, temperature=0.0, seed=0, max_new_tokens=256):
        from sftrl.generate import Generation, encode
        from sftrl.compute import TokenCount
        texts = [oracle_answer('virl-l', {}, item['info']) for item in batch]
        prompts = [encode(policy, [item])['input_ids'][0].tolist() for item in batch]
        answers = [policy.tokenizer(t)['input_ids'] for t in texts]
        return Generation(texts, prompts, answers, TokenCount())
    rollout = collect(policy, ValueHead(hidden_size(policy.model)), 'virl-l', steps=30, n_envs=2, seed=0, generator=expert)
    assert all(t.reward > 0 for t in rollout.turns)
    assert rollout.episodes and all(e['success'] for e in rollout.episodes)
    assert all(t.done == t.success for t in rollout.turns)


def test_bad_runs(tmp_path):
    with pytest.raises(ValueError, match='preset must be one of'):
        rl_run('huge', 'gp-l', init='x')
    with pytest.raises(ValueError, match='run.init must name'):
        train_rl(rl_run('smoke', 'gp-l'), root=tmp_path)
    with pytest.raises(FileNotFoundError):
        train_rl(rl_run('smoke', 'gp-l', init=str(tmp_path / 'missing')), root=tmp_path, progress=False)


def test_rl_reports_every_update_to_the_accelerate_trackers(tmp_path, policy):
    from accelerate.tracking import GeneralTracker
    from sftrl.models import save_policy

    class Recorder(GeneralTracker):
        "A tracker that keeps what accelerate hands it (TensorBoard and trackio get the same calls)."
        name, requires_logging_directory = 'recorder', False
        def __init__(self): super().__init__(); self.config, self.rows = None, []
        @property
        def tracker(self): return self
        def store_init_configuration(self, values): self.config = values
        def log(self, values, step=None, **kwargs): self.rows.append((step, values))

    recorder = Recorder()
    run = rl_run('smoke', 'gp-l', init=str(save_policy(policy, tmp_path / 'init')), updates=2, steps=4, n_envs=2,
                 minibatch=2, ppo_epochs=1, max_new_tokens=8, checkpoints=1)
    train_rl(run, root=tmp_path / 'runs', progress=False, report_to=[recorder])
    assert [step for step, _ in recorder.rows] == [1, 2]
    assert recorder.config['learning_rate'] == run.learning_rate and 'viter' not in recorder.config   # None values left out
    assert {'mean_reward', 'success_rate', 'clip_fraction', 'explained_variance', 'flops'} <= set(recorder.rows[0][1])


def test_the_learning_rate_sweep_script_prints_each_update_and_applies_the_rule(tmp_path, policy, capsys):
    "benchmarks/rl_lr_sweep.py on a smoke policy, 2 updates a rate: the per-update table, the rule's table, the choice."
    import runpy
    from pathlib import Path
    from sftrl.models import save_policy
    from sftrl.rl import TINY_LEARNING_RATES, choose_learning_rate, rl_log
    script = runpy.run_path(str(Path(__file__).parents[1] / 'benchmarks' / 'rl_lr_sweep.py'))
    init = save_policy(policy, tmp_path / 'init')
    chosen, table = script['main']([str(init), 'gp-l', '--updates', '2', '--preset', 'smoke', '--root', str(tmp_path / 'runs'), '--set',
                                    'steps=4', 'n_envs=2', 'minibatch=2', 'max_new_tokens=8', 'viter=2', 'kl_probes=1'])
    out = capsys.readouterr().out
    assert out.count('learning rate ') == 3 and 'approx_kl' in out and 'clip_fraction' in out and 'kl_init_id' in out
    assert list(table.learning_rate) == list(TINY_LEARNING_RATES) and list(table.updates) == [2, 2, 2]
    if chosen is None: assert not table.admissible.any() and ('sweep smaller rates' in out or 'more turns per update' in out)
    else: assert table.query('chosen').learning_rate.tolist() == [chosen] and f'chosen learning rate: {chosen:g}' in out
    logs = {json.loads(f.read_text())['learning_rate']: rl_log(f.parent) for f in (tmp_path / 'runs').glob('rl-*/run.json')}
    assert choose_learning_rate(logs) == chosen


def test_the_learner_check_deals_every_training_episode_from_its_pool(tmp_path, policy, capsys, monkeypatch):
    "benchmarks/rl_learner_check.py on a smoke policy: training seeds come from the pool only, one table per rate."
    import runpy
    from pathlib import Path
    import sftrl.rl as rl
    from sftrl.models import save_policy
    from sftrl.tasks import training_seeds
    monkeypatch.setattr(rl, 'training_seeds', rl.training_seeds)   # the script replaces it; the test puts it back
    script = runpy.run_path(str(Path(__file__).parents[1] / 'benchmarks' / 'rl_learner_check.py'))
    init = save_policy(policy, tmp_path / 'init')
    logs = script['main']([str(init), '--hands', '2', '--rates', '1e-4', '1e-5', '--preset', 'smoke', '--root', str(tmp_path / 'runs'),
                           '--set', 'updates=1', 'steps=4', 'n_envs=2', 'minibatch=2', 'max_new_tokens=8', 'viter=2', 'kl_probes=1'])
    pool = training_seeds(0, 2)
    assert rl.training_seeds(7, 5) == [pool[0], pool[1], pool[0], pool[1], pool[0]]
    out = capsys.readouterr().out
    assert out.count('2 training hands, learning rate ') == 2 and 'success_rate' in out
    assert sorted(logs) == [1e-5, 1e-4] and all(len(log) == 1 for log in logs.values())
    assert len(list((tmp_path / 'runs' / '2-hands').glob('rl-*/done'))) == 2
