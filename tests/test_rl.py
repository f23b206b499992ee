"RL beyond the chapter: data parallel over 2 CPU processes, masks, scripted rollouts on V-IRL, bad runs."
import hashlib
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from sftrl.models import build_text_policy, build_tokenizer, save_policy, task_texts
from sftrl.rl import Turn, ValueHead, collect, hidden_size, rl_run, score, train_rl
from sftrl.tasks import oracle_answer


@pytest.fixture(scope='module')
def policy():
    return build_text_policy(build_tokenizer(task_texts(n=40), 400), 'smoke', seed=0)


def test_two_processes_agree_on_the_weights_after_an_update(tmp_path, policy):
    init = save_policy(policy, tmp_path / 'init')
    script = tmp_path / 'train.py'
    script.write_text(textwrap.dedent(f"""
        import hashlib, torch
        from accelerate import PartialState
        from sftrl.rl import rl_run, train_rl
        from sftrl.models import load_policy
        run = rl_run('smoke', 'gp-l', init={str(init)!r}, updates=1, steps=4, n_envs=2, minibatch=2, ppo_epochs=1,
                     max_new_tokens=8, checkpoints=1, learning_rate=1e-2)
        folder = train_rl(run, root={str(tmp_path / 'runs')!r}, progress=False)
        state = PartialState(cpu=True)
        digest = hashlib.sha256(b''.join(p.detach().numpy().tobytes() for p in
                                         torch.load(folder / 'state' / 'trainer.pt', weights_only=False)['value_head'].values()))
        print('rank', state.process_index, 'of', state.num_processes, 'value head', digest.hexdigest())
        """))
    # `--multi_gpu` is accelerate's torchrun launcher; on a machine without GPUs the ranks run on CPU over gloo
    out = subprocess.run([sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
                          '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no', str(script)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [l for l in out.stdout.splitlines() if l.startswith('rank')]
    assert sorted(l.split()[1] for l in lines) == ['0', '1'] and all('of 2' in l for l in lines)
    folder = next((tmp_path / 'runs').glob('rl-*'))
    checksums = json.loads((folder / 'log.jsonl').read_text().splitlines()[0])['rank_checksums']
    assert len(checksums) == 2 and checksums[0] == checksums[1]   # gathered from both ranks after the update
    from sftrl.models import load_policy
    trained = load_policy(folder / 'state' / 'policy').model.state_dict()
    start = policy.model.state_dict()
    assert any(not torch.equal(start[k], trained[k]) for k in start)   # the update moved the weights


def test_score_reads_only_the_answer_tokens(policy):
    head = ValueHead(hidden_size(policy.model))
    tok = policy.tokenizer
    prompt = tok.apply_chat_template([{'role': 'user', 'content': 'Cards: 1 2 3 4'}, {'role': 'assistant', 'content': 'x'},
                                      {'role': 'user', 'content': 'You failed this trial because of x'}],
                                     add_generation_prompt=True, tokenize=True, return_dict=True)['input_ids']
    answer = tok('{"formula": "1*2*3*4=24"}')['input_ids'] + [tok.eos_token_id]
    turn = Turn(prompt, answer, [1.0] * len(answer), None, 0.0, 0.0)
    with torch.no_grad():
        logprob, entropy, value = score(policy.model, head, [turn], 0.2, tok.pad_token_id)
        logits = policy.model(torch.tensor([prompt + answer])).logits[0] / 0.2
    manual = torch.log_softmax(logits.float(), -1)[len(prompt) - 1:-1].gather(-1, torch.tensor(answer)[:, None]).sum()
    assert torch.isclose(logprob[0], manual, atol=1e-4)
    other = Turn(prompt[:-3] + [tok.pad_token_id] * 3, answer, [0.0] * len(answer), None, 0.0, 0.0)
    assert score(policy.model, head, [other], 0.2, tok.pad_token_id)[0].item() == 0.0   # zero weights: nothing counted


def test_virl_rollout_with_the_expert_succeeds_at_every_point(policy):
    def expert(policy, batch, temperature=0.0, seed=0, max_new_tokens=256):
        from sftrl.generate import Generation, encode
        from sftrl.evaluate import TokenCount
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
