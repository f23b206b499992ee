"SFT beyond the chapter: the vision path through TRL, what `trainable` freezes, datasets on disk, V-IRL-VL demonstrations."
import json

import pytest
import torch
from datasets import load_from_disk

from sftrl.models import load_policy
from sftrl.runs import checkpoint_table
from sftrl.sft import _ResumingSFTTrainer, base_policy, demonstrations, sft_arguments, sft_run, train_sft
from sftrl.tasks import make_env, start_episode


@pytest.fixture(scope='module')
def vision_base(tmp_path_factory):
    return base_policy(sft_run('smoke', 'gp-vl'))


def test_vision_labels_are_the_answer_only(vision_base, tmp_path):
    data = demonstrations('gp-vl', 2, holdout=20, resolution=64)
    trainer = _ResumingSFTTrainer(model=vision_base.model, args=sft_arguments(sft_run('smoke', 'gp-vl'), tmp_path, 4, False),
                                  train_dataset=data, processing_class=vision_base.processor)
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    assert 'pixel_values' in batch
    for row, labels in zip(data, batch['labels']):
        answer = vision_base.tokenizer.decode(labels[labels != -100])
        assert answer == row['messages'][-1]['content'] + vision_base.tokenizer.eos_token


def test_language_model_only_keeps_the_tower_and_projector(tmp_path):
    run = sft_run('smoke', 'gp-vl', trainable='language_model', examples=16, checkpoints=1)
    before = base_policy(run).model.state_dict()
    after = load_policy(checkpoint_table(train_sft(run, root=tmp_path, progress=False)).path.iloc[-1]).model.state_dict()
    frozen = [k for k in before if 'vision_tower' in k or 'multi_modal_projector' in k]
    trained = [k for k in before if 'language_model' in k and 'layers' in k]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)
    compute = json.loads((tmp_path.glob('*/checkpoints/checkpoint-*/compute.json').__next__()).read_text())
    assert compute['tokens'] > 16 * 16   # every row holds its 16 image tokens (64 px / 16 px patches) and more


def test_dataset_round_trips_on_disk(tmp_path):
    data = demonstrations('gp-vl', 3, holdout=20, resolution=64)
    data.save_to_disk(str(tmp_path / 'demos'))
    back = load_from_disk(str(tmp_path / 'demos'))
    assert back['messages'] == data['messages'] and back['seed'] == data['seed']
    assert [im[0].size for im in back['images']] == [(64, 64)] * 3


def test_virl_vision_demonstrations_show_the_view_of_each_point():
    data = demonstrations('virl-vl', 6, resolution=32)
    env = make_env('virl-vl', 'train', resolution=32)
    obs, _ = start_episode(env, 'virl-vl', 'train', data[0]['seed'])
    assert data[0]['images'][0].size == (obs['image'].shape[1], obs['image'].shape[0])
    assert data['position'][:2] == [0, 1]
    assert all('action' in row['messages'][-1]['content'] for row in data)


def test_bad_runs_fail_before_training(tmp_path):
    with pytest.raises(ValueError, match='trainable must be one of'):
        sft_run('smoke', 'gp-l', trainable='head')
    with pytest.raises(ValueError, match='has no split'):
        make_env('gp-l', 'ood_visual')
    with pytest.raises(FileNotFoundError):
        train_sft(sft_run('smoke', 'gp-l', base=str(tmp_path / 'missing')), root=tmp_path, progress=False)


def test_fp32_and_bf16_train_the_same_smoke_run_within_a_hundredth(tmp_path, monkeypatch):
    """Precision by measurement (sftrl.runs.training_precision): the smoke GP-L run under SFTRL_PRECISION=fp32 and =bf16
    logs the same losses to 0.01 (measured 2026-12-05 on a CPU with bf16 units: at most 0.0044 apart per step, final
    training loss 3.5391 and 3.5396)."""
    import pandas as pd
    losses = {}
    for precision in ('fp32', 'bf16'):
        monkeypatch.setenv('SFTRL_PRECISION', precision)
        log = pd.read_csv(train_sft(sft_run('smoke', 'gp-l'), root=tmp_path / precision, progress=False, report_to=[]) / 'log.csv')
        losses[precision] = log['loss'].dropna().to_numpy()
    assert len(losses['fp32']) == len(losses['bf16']) > 2
    assert abs(losses['fp32'] - losses['bf16']).max() < 0.01
