"""The ledger beyond the chapter (issue 19 §1): a study recorded in one folder is redrawn from a copy of its ledger in
another folder without any training; no ledger file holds a path of the machine that wrote it; a clone continues
unfinished work from the kept Init; --fresh ignores the ledger; every committed base is its preset's."""
import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from sftrl import ledger, study
from sftrl.base import BASE_PRESETS
from sftrl.base_vision import VISION_BASE_PRESETS
from sftrl.core import config_hash
from sftrl.ledger import (FRESH_ENV, LEDGER_ENV, REPOSITORY, _plain, committed_bases, kept_checkpoints, ledger_for,
                          retire_checkpoint)


def _no_training(monkeypatch):
    "Training or loading a model fails the test: what follows must come from the ledger."
    def refuse(*args, **kwargs): raise AssertionError('trained or loaded a model: the ledger should have answered')
    for target in ('sftrl.sft._train', 'sftrl.rl._train', 'sftrl.dpo._train', 'sftrl.arms._load'):
        monkeypatch.setattr(target, refuse)


def _figure_data(root):
    arms = study.study_arms('gp-l', 'smoke', 0, root)
    return study.evaluate_arms(arms, ['id', 'ood_rule'], 'smoke', root)


@pytest.fixture(scope='module')
def recorded(tmp_path_factory):
    "A smoke GP-L study (SFT, Init, RL, their evaluations) computed once in folder `a`, with its ledger."
    tmp = tmp_path_factory.mktemp('ledger')
    with pytest.MonkeyPatch.context() as m:
        m.setenv(LEDGER_ENV, str(tmp / 'a' / 'ledger'))
        data = _figure_data(tmp / 'a' / 'runs')
    return tmp, data


def test_a_clone_elsewhere_redraws_the_figure_without_training(recorded, monkeypatch):
    tmp, data = recorded
    shutil.copytree(tmp / 'a' / 'ledger', tmp / 'b' / 'ledger')   # what `git clone` into another folder brings
    monkeypatch.setenv(LEDGER_ENV, str(tmp / 'b' / 'ledger'))
    _no_training(monkeypatch)
    again = _figure_data(tmp / 'b' / 'runs')
    pd.testing.assert_frame_equal(again, data)
    assert set(data.arm) == {'Init', 'SFT', 'RL'} and 'rule_validity' in data


def test_no_ledger_file_holds_a_path_of_this_machine(recorded):
    tmp, _ = recorded
    files = [p for p in (tmp / 'a' / 'ledger').rglob('*') if p.is_file() and p.suffix != '.safetensors']
    assert files and any(p.name.endswith('.jsonl.gz') for p in files)
    for p in files:
        text = gzip.decompress(p.read_bytes()).decode() if p.suffix == '.gz' else p.read_text()
        assert str(tmp) not in text and '/work/' not in text, p
    run = json.loads(next((tmp / 'a' / 'ledger' / 'smoke' / 'rl').glob('*/run.json')).read_text())
    assert run['init'].startswith('sft-gp-l-smoke-') and run['init'].count('/') == 1   # the Init by its name


def test_the_ledger_keeps_weights_only_where_a_run_starts(recorded):
    tmp, data = recorded
    weights = sorted(p.parent.name for p in (tmp / 'a' / 'ledger').rglob('*.safetensors'))
    init = data[data.arm == 'Init'].checkpoint.iloc[0]
    assert weights == [init.rsplit('/', 1)[-1]]                       # the Init only: no SFT, no RL checkpoint
    assert not list((tmp / 'a' / 'ledger').rglob('optimizer.pt')) and not list((tmp / 'a' / 'ledger').rglob('state'))


def test_a_clone_continues_from_the_kept_init(recorded, monkeypatch):
    "A run the ledger does not hold (a longer RL run) trains on the clone, from the Init's restored weights."
    tmp, data = recorded
    shutil.copytree(tmp / 'a' / 'ledger', tmp / 'c' / 'ledger')
    monkeypatch.setenv(LEDGER_ENV, str(tmp / 'c' / 'ledger'))
    root = tmp / 'c' / 'runs'
    init = study.sft_arms('gp-l', 'smoke', 0, root).path.iloc[0]
    folder = study.rl('gp-l', 'smoke', init, 0, root, updates=1, checkpoints=1)
    assert (folder / 'done').exists() and (tmp / 'c' / 'ledger' / 'smoke' / 'rl' / folder.name / 'done').exists()


def test_fresh_ignores_the_ledger(recorded, monkeypatch):
    tmp, _ = recorded
    shutil.copytree(tmp / 'a' / 'ledger', tmp / 'd' / 'ledger')
    monkeypatch.setenv(LEDGER_ENV, str(tmp / 'd' / 'ledger'))
    monkeypatch.setenv(FRESH_ENV, '1')
    _no_training(monkeypatch)
    with pytest.raises(AssertionError, match='the ledger should have answered'):
        study.sft('gp-l', 'smoke', 0, tmp / 'd' / 'runs')


def test_the_smoke_preset_stays_out_of_the_repository_ledger(monkeypatch):
    monkeypatch.delenv(LEDGER_ENV, raising=False)
    assert ledger_for('smoke') is None


def test_every_committed_base_is_its_preset():
    "A changed base preset fails here until its base is rebuilt and committed (`sftrl base --size tiny [--vision] --rebuild`)."
    presets = {**{f'base-{c.size}-{config_hash(c)}': c for c in BASE_PRESETS.values()},
               **{f'vision-base-{c.text.size}-{config_hash(c)}': c for c in VISION_BASE_PRESETS.values()}}
    for base in committed_bases(REPOSITORY / 'ledger'):
        assert base['name'] in presets, (f"ledger/base/{base['name']} is no preset's base any more (the preset changed): "
                                          "rebuild and commit it with `sftrl base --size tiny [--vision] --rebuild`, then delete the old one")
        assert base['config'] == _plain(presets[base['name']]), f"ledger/base/{base['name']} was built from another config"


def test_compare_two_arms_on_the_same_episodes_from_the_ledger(recorded, monkeypatch):
    "Init against RL's last checkpoint, paired episode by episode, read from a clone's ledger (nothing played again)."
    tmp, data = recorded
    shutil.copytree(tmp / 'a' / 'ledger', tmp / 'e' / 'ledger')
    monkeypatch.setenv(LEDGER_ENV, str(tmp / 'e' / 'ledger'))
    _no_training(monkeypatch)
    root = tmp / 'e' / 'runs'
    arms = study.study_arms('gp-l', 'smoke', 0, root)
    init, last = arms[arms.arm == 'Init'].path.iloc[0], arms[arms.arm == 'RL'].path.iloc[-1]
    change = study.compare(init, last, 'gp-l', 'id', 'smoke', root)
    rows = data[(data.split == 'id') & data.arm.isin(['Init', 'RL'])]
    assert change.n == study.eval_episodes('smoke', 'gp-l', 'id') and change.gained - change.lost == round(change.difference * change.n)
    assert abs(100 * change.difference - (rows.value.iloc[-1] - rows.value.iloc[0])) < 1e-9
    validity = study.compare(init, last, 'gp-l', 'id', 'smoke', root, column='rule_validity')
    assert abs(100 * validity.difference - (rows.rule_validity.iloc[-1] - rows.rule_validity.iloc[0])) < 1e-9


def test_the_committed_ledger_stays_under_100_mb():
    "Issue 19 §1: the ledger lives in git; weights are kept only where later runs start, in float16."
    files = [p for p in (REPOSITORY / 'ledger').rglob('*') if p.is_file()]
    megabytes = sum(p.stat().st_size for p in files) / 2 ** 20
    assert megabytes < 100, f"ledger/ is {megabytes:.0f} MB: keep fewer checkpoints (sftrl.ledger.keep_checkpoint)"
    assert not any(p.name.endswith(('.partial', 'optimizer.pt', 'scheduler.pt')) for p in files)


def test_an_init_trained_before_the_ledger_is_kept_when_next_used(recorded, monkeypatch):
    "Runs finished in a runs/ folder the ledger never saw (moved from elsewhere) are recorded, and their Init kept, on next use."
    tmp, _ = recorded
    shutil.copytree(tmp / 'a' / 'runs', tmp / 'f' / 'runs')
    monkeypatch.setenv(LEDGER_ENV, str(tmp / 'f' / 'ledger'))
    _no_training(monkeypatch)
    study.study_arms('gp-l', 'smoke', 0, tmp / 'f' / 'runs')
    kept = list((tmp / 'f' / 'ledger').rglob('*.safetensors'))
    assert len(kept) == 1 and (tmp / 'f' / 'ledger' / 'smoke' / 'rl').is_dir()


def test_a_committed_vision_base_needs_no_text_base(tmp_path, monkeypatch):
    "A fresh cache with the vision base in the ledger loads it without building (or finding) its text base."
    from sftrl.base_vision import pretrain_vision_base
    from sftrl.ledger import record_base
    config = VISION_BASE_PRESETS['smoke']
    built = pretrain_vision_base(config, progress=False)        # the shared test cache's smoke vision base
    monkeypatch.setenv(LEDGER_ENV, str(tmp_path / 'ledger'))
    record_base(Path(built.model.name_or_path).parent, config)
    def refuse(*args, **kwargs): raise AssertionError('built the text base')
    monkeypatch.setattr('sftrl.base_vision.pretrain_base', refuse)
    loaded = pretrain_vision_base(config, cache_dir=tmp_path / 'cache', progress=False)
    assert loaded.kind == 'vision' and (tmp_path / 'cache' / Path(built.model.name_or_path).parent.name / 'final').is_dir()


@pytest.mark.slow
def test_reproduce_redraws_a_figure_from_a_cloned_ledger(tmp_path, monkeypatch):
    """`sftrl reproduce` end to end: fig05 (smoke, four tasks) computed in one folder, then drawn in another from a copy of
    its ledger alone — the same CSV. Measured (2026-12-05, 2 cores): 134 s computed, 25 s redrawn (kernel start included)."""
    from sftrl.study import read_figure_csv, reproduce
    monkeypatch.setenv(LEDGER_ENV, str(tmp_path / 'ledger'))
    reproduce('smoke', only=['fig05_compute'], root=tmp_path / 'a' / 'runs', figures_dir=tmp_path / 'a', log=lambda m: None)
    shutil.copytree(tmp_path / 'ledger', tmp_path / 'clone')
    monkeypatch.setenv(LEDGER_ENV, str(tmp_path / 'clone'))
    reproduce('smoke', only=['fig05_compute'], root=tmp_path / 'b' / 'runs', figures_dir=tmp_path / 'b', log=lambda m: None)
    pd.testing.assert_frame_equal(*(read_figure_csv(tmp_path / f / 'fig05_compute.csv')[0] for f in 'ab'))
    assert not list((tmp_path / 'b' / 'runs').rglob('optimizer.pt')) and not list((tmp_path / 'b' / 'runs').rglob('trainer.pt'))   # nothing trained in b


def _git(folder, *args): return ledger._git(folder, '-c', 'user.name=sftrl', '-c', 'user.email=sftrl@example.org', *args)


def test_a_clone_continues_from_a_retired_init(recorded, monkeypatch):
    "Issue 19 §1 and a second seed's room: the Init's weights retired to git history come back on a clone when a run needs them."
    tmp, _ = recorded
    repo = tmp / 'g'
    shutil.copytree(tmp / 'a' / 'ledger', repo / 'ledger')
    _git(repo, 'init', '-q'); _git(repo, 'add', '.'); _git(repo, 'commit', '-qm', 'the ledger')
    monkeypatch.setenv(LEDGER_ENV, str(repo / 'ledger'))
    (kept,) = kept_checkpoints('smoke')
    assert kept['runs_from'] and not kept['retired_at']                          # the RL run starts from it
    retire_checkpoint(next((repo / 'ledger').rglob('*.safetensors')).parent)
    _git(repo, 'add', '-A'); _git(repo, 'commit', '-qm', 'retire the Init')
    assert not list((repo / 'ledger').rglob('*.safetensors')) and kept_checkpoints('smoke')[0]['retired_at']
    _git(tmp, 'clone', '-q', str(repo), 'g-clone')
    monkeypatch.setenv(LEDGER_ENV, str(tmp / 'g-clone' / 'ledger'))
    root = tmp / 'g-clone' / 'runs'
    init = study.sft_arms('gp-l', 'smoke', 0, root).path.iloc[0]
    assert list(Path(init).glob('*.safetensors'))                                # read back from history
    folder = study.rl('gp-l', 'smoke', init, 0, root, updates=1, checkpoints=1, learning_rate=3e-5)
    assert (folder / 'done').exists()
    _git(tmp, 'clone', '-q', '--depth', '1', f'file://{repo}', 'g-shallow')       # history without the weights
    monkeypatch.setenv(LEDGER_ENV, str(tmp / 'g-shallow' / 'ledger'))
    with pytest.warns(UserWarning, match='git history does not hold it'):
        init = study.sft_arms('gp-l', 'smoke', 0, tmp / 'g-shallow' / 'runs').path.iloc[0]   # the records: figures need no weights
    with pytest.raises(FileNotFoundError, match='retired from the ledger'):
        study.rl('gp-l', 'smoke', init, 0, tmp / 'g-shallow' / 'runs', updates=1, checkpoints=1, learning_rate=3e-5)
