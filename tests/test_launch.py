"Training at scale through `accelerate launch`: the shipped configurations, and SFT then PPO on 2 CPU processes via `sftrl train`."
import json
import subprocess
import sys

import pytest
import torch

from sftrl.base import BASE_PRESETS, pretrain_base
from sftrl.launch import accelerate_config, accelerate_configs, dry_run, launch_command, read_accelerate_config
from sftrl.models import load_policy
from sftrl.runs import checkpoint_table


def test_every_shipped_configuration_parses_and_sizes_a_model():
    model = pretrain_base(BASE_PRESETS['smoke'], progress=False).model
    for name in accelerate_configs():
        config = read_accelerate_config(name)
        row = dry_run(name, model)
        assert row['processes'] == config.num_processes and row['gpu_gib'] > 0, row
        assert config.mixed_precision == ('no' if config.use_cpu else 'bf16'), name   # the paper trained in bf16 on GPUs


def _launch(stage: str, start: str, root, overrides: list[str]) -> str:
    command = launch_command(stage, 'gp-l', 'cpu-2proc', 'smoke', start, overrides) + ['--root', str(root)]
    command = [sys.executable, '-m', 'accelerate.commands.launch'] + command[2:]   # this interpreter's accelerate
    out = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


def test_sft_then_ppo_on_two_processes_through_sftrl_train(tmp_path):
    base = pretrain_base(BASE_PRESETS['smoke'], progress=False)   # cached before the ranks start: they only load it
    _launch('sft', '', tmp_path, ['examples=32', 'batch_size=4', 'checkpoints=1'])
    sft = next((tmp_path / 'smoke' / 'sft').glob('sft-gp-l-*'))
    table = checkpoint_table(sft)
    # 32 examples, 4 per rank and step, 2 ranks: 4 steps, and every token of both ranks counted
    assert list(table.step) == [4] and json.loads((sft / 'run.json').read_text())['examples'] == 32
    assert table.tokens.iloc[0] > 0 and (sft / 'log.csv').exists()
    trained = load_policy(table.path.iloc[0]).model.state_dict()
    assert any(not torch.equal(v, trained[k]) for k, v in base.model.state_dict().items())

    _launch('rl', table.path.iloc[0], tmp_path, ['updates=1', 'steps=4', 'n_envs=2', 'minibatch=2', 'ppo_epochs=1',
                                                 'max_new_tokens=8', 'checkpoints=1', 'learning_rate=1e-2'])
    rl = next((tmp_path / 'smoke' / 'rl').glob('rl-gp-l-*'))
    log = [json.loads(line) for line in (rl / 'log.jsonl').read_text().splitlines()]
    assert len(log) == 1 and (rl / 'done').exists()
    checksums = log[0]['rank_checksums']
    assert len(checksums) == 2 and checksums[0] == checksums[1]   # both ranks hold the same weights after the update
    after = load_policy(rl / 'checkpoint-1').model.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in trained.items())   # the update moved the weights


def test_a_bad_launch_says_what_is_wrong():
    with pytest.raises(ValueError, match="no accelerate configuration 'zero9'"): accelerate_config('zero9')
    from sftrl.launch import train
    with pytest.raises(ValueError, match="the 'paper' preset starts from a real checkpoint"): train('sft', 'gp-l', 'paper')
