"""Bad configurations and broken files get clear errors (issue 22): an unknown task, split, preset, verifier, trainer
arm or experiment is refused in one line that names it and what is allowed; a corrupt checkpoint is refused in one
line that names its folder and deletes nothing; an evaluation file cut by a kill (a half-written last line, a
garbled line) is read without that line and the evaluation resumes to the uninterrupted rows; a ledger file cut short
(a copy or a checkout killed half-way) is refused in one line that names it, and nothing is restored from it or lost."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from sftrl.cli import main
from sftrl.core import config_hash
from sftrl.evaluate import evaluate, load_evaluation, random_mistake_policy, read_log
from sftrl.dpo import dpo_run
from sftrl.grpo import grpo_run
from sftrl.launch import train
from sftrl.ledger import keep_checkpoint, record_base, record_evaluation, record_run, restore_base, restore_evaluation, restore_run
from sftrl.models import build_text_policy, build_tokenizer, load_policy, save_policy
from sftrl.rl import rl_run
from sftrl.sft import sft_run
from sftrl.study import check_parameters, reproduce, rl_arms, run_experiment, study_preset
from sftrl.tasks import get_task, make_env, verifier_mode

BAD = {
    'task': (lambda: get_task('gp-x'), ['gp-x', 'gp-l', 'virl-vl']),
    'split of GP-L': (lambda: make_env('gp-l', 'ood_visual'), ['ood_visual', 'ood_rule']),
    'split of V-IRL-L': (lambda: make_env('virl-l', 'test'), ['test', 'train', 'id']),
    'split of an evaluation': (lambda: evaluate(lambda b: [''] * len(b), 'gp-l', 'nope', n=1, progress=False), ['nope', 'id']),
    'verifier': (lambda: verifier_mode('gp-l', 'strict'), ['strict', 'exact', 'official']),
    'SFT preset': (lambda: sft_run('big', 'gp-l'), ['big', 'smoke', 'paper']),
    'RL preset': (lambda: rl_run('big', 'gp-l'), ['big', 'tiny']),
    'DPO preset': (lambda: dpo_run('big', 'gp-l'), ['big', 'tiny']),
    'GRPO preset': (lambda: grpo_run('big', 'gp-l'), ['big', 'tiny']),
    'study preset': (lambda: study_preset('big'), ['big', 'paper']),
    'reproduce preset': (lambda: reproduce('big'), ['big', 'smoke']),
    'experiment': (lambda: reproduce('smoke', only=['fig99'], log=lambda *a: None), ['fig99', 'fig05_compute']),
    'one experiment': (lambda: run_experiment('fig99', 'smoke'), ['fig99', 'fig06_rule_ood']),
    'RL arm trainer': (lambda: rl_arms('gp-l', 'smoke', 'init', trainer='a2c'), ['a2c', 'ppo', 'grpo']),
    'training stage': (lambda: train('dpo', 'gp-l', 'smoke', '', 'runs-none', []), ['dpo', 'sft', 'rl']),
    'run field': (lambda: train('sft', 'gp-l', 'smoke', '', 'runs-none', ['lr=1']), ["'lr'", 'learning_rate']),
    'run field type': (lambda: train('sft', 'gp-l', 'smoke', '', 'runs-none', ['learning_rate=fast']), ['fast', 'float']),
}


@pytest.mark.parametrize('name', list(BAD))
def test_bad_configs_fail_in_one_line_naming_what_is_allowed(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                                  # nothing may be written where the test runs from
    call, words = BAD[name]
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        call()
    message = str(error.value)
    assert '\n' not in message, message
    for word in words: assert word in message, (word, message)
    assert not list(tmp_path.iterdir())                          # refused before anything was written


@pytest.mark.parametrize('argv,words', [
    (['reproduce', '--preset', 'big'], ['big', 'smoke']),
    (['reproduce', '--preset', 'smoke', '--only', 'fig99'], ['fig99', 'fig05_compute']),
    (['train', 'sft', '--task', 'gp-x'], ['gp-x', 'gp-l']),
    (['demo', '--split', 'ood_visual'], ['ood_visual', 'vision=False'])])
def test_the_command_line_says_the_same_in_one_line(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    for word in words: assert word in error, (word, error)


# --- a corrupt checkpoint ------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    policy = build_text_policy(build_tokenizer(['{"formula": "1+2*3-4=24"}', 'You failed this trial because'] * 20), 'smoke')
    return save_policy(policy, tmp_path_factory.mktemp('policy') / 'checkpoint')


def _broken(checkpoint, tmp_path, name, damage):
    folder = tmp_path / name
    shutil.copytree(checkpoint, folder)
    damage(folder)
    return folder


@pytest.mark.parametrize('name,damage', [
    ('weights cut by a kill', lambda f: (f / 'model.safetensors').write_bytes((f / 'model.safetensors').read_bytes()[:5000])),
    ('empty weights', lambda f: (f / 'model.safetensors').write_bytes(b'')),
    ('no weights', lambda f: (f / 'model.safetensors').unlink()),
    ('config cut', lambda f: (f / 'config.json').write_text((f / 'config.json').read_text()[:40])),
    ('tokenizer cut', lambda f: (f / 'tokenizer.json').write_text((f / 'tokenizer.json').read_text()[:100]))])
def test_a_corrupt_checkpoint_is_refused_in_one_line_and_kept(checkpoint, tmp_path, name, damage):
    folder = _broken(checkpoint, tmp_path, name.replace(' ', '_'), damage)
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(ValueError) as error:
        load_policy(folder)
    message = str(error.value)
    assert '\n' not in message and f'checkpoint {folder} is corrupt or incomplete' in message, message
    assert sorted(p.name for p in folder.iterdir()) == before                  # nothing deleted
    assert load_policy(checkpoint).kind == 'text'                              # the intact one still loads


# --- an evaluation file cut by a kill ------------------------------------------------------------------------

def _frames_equal(a, b):
    for x, y in zip(a, b): pd.testing.assert_frame_equal(x.reset_index(drop=True), y.reset_index(drop=True))


def test_a_cut_or_garbled_evaluation_file_is_read_without_the_bad_lines_and_resumed(tmp_path):
    policy = random_mistake_policy('gp-l', p=0.6, seed=3)
    run = lambda out=None, n=8: evaluate(policy, 'gp-l', 'id', n=n, batch_size=3, out=out, progress=False)
    reference = run()
    log = tmp_path / 'eval.jsonl'
    run(log, n=5)
    lines = log.read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    step = next(k for k, r in enumerate(rows) if r['type'] == 'step' and r['sample_id'] == 1)
    summary = next(k for k, r in enumerate(rows) if r['type'] == 'episode' and r['sample_id'] == 2)
    for k in (step, summary): lines[k] = lines[k][:25] + '\x00\x00 garbled'    # lines the disk mangled, mid-file
    log.write_text('\n'.join(lines) + '\n' + lines[-1][:30])                   # and a half-written last line
    header, done = read_log(log)                                               # readable as it is: bad lines skipped
    assert header is not None and set(done) == {0, 3, 4}                       # an episode missing a line is not finished
    steps, episodes = load_evaluation(log)
    assert list(episodes.sample_id) == [0, 3, 4] and set(steps.sample_id) == {0, 3, 4}
    _frames_equal(run(log), reference)                                         # resumed: episodes 1, 2, 5-7 played
    _frames_equal(load_evaluation(log), reference)


@pytest.mark.parametrize('params,words', [
    ({'budgets': '1'}, ['budgets', "'1'", '[1, 3, 5, 10]']),
    ({'budgets': ['1']}, ['budgets', "['1']"]),
    ({'budget': [1]}, ["'budget'", 'budgets']),
    ({'seeds': ['0']}, ['seeds', "['0']", '[0, 1]'])])
def test_a_notebook_parameter_of_the_wrong_name_or_kind_fails_before_it_runs(params, words, tmp_path):
    with pytest.raises(ValueError) as error:
        run_experiment('fig10_verification_budget', 'smoke', root=tmp_path / 'runs', figures_dir=tmp_path / 'figures', **params)
    message = str(error.value)
    assert '\n' not in message and all(word in message for word in words), message
    assert not list(tmp_path.iterdir())                                        # nothing started, nothing written
    check_parameters('fig15_suboptimal_sft', {'seeds': [0], 'mistake_rate': 1})   # ints where floats go are fine


# --- a ledger file cut short ---------------------------------------------------------------------------------

RUN = 'rl-gp-l-0123456789ab'
EVALUATION = 'gp-l-id-0123456789ab.jsonl'


@pytest.fixture
def ledger(checkpoint, tmp_path, monkeypatch):
    """A smoke ledger holding an evaluation, an RL run with a kept checkpoint, an SFT run and a base; here, the
    evaluation's first episode and nothing else (the runs and the base cache are gone)."""
    from sftrl.base import BaseConfig
    monkeypatch.setenv('SFTRL_LEDGER', str(tmp_path / 'ledger'))
    runs = tmp_path / 'runs' / 'smoke'
    log = runs / 'eval' / EVALUATION
    evaluate(random_mistake_policy('gp-l', p=0.5, seed=1), 'gp-l', 'id', n=4, out=log, progress=False)
    record_evaluation(log, 'smoke', {'checkpoint': f'{RUN}/checkpoint-2'}, {})
    rl, sft = runs / 'rl' / RUN, runs / 'sft' / 'sft-gp-l-smoke-0123456789ab'
    shutil.copytree(checkpoint, rl / 'checkpoint-2')
    (rl / 'run.json').write_text(json.dumps({'task': 'gp-l', 'init': str(checkpoint)}))
    (rl / 'log.jsonl').write_text('{"update": 1, "mean_reward": -1.5}\n{"update": 2, "mean_reward": -1.0}\n')
    (rl / 'done').write_text('')
    keep_checkpoint(rl / 'checkpoint-2', 'smoke')                               # the run recorded, its Init's weights kept
    sft.mkdir(parents=True)
    (sft / 'run.json').write_text(json.dumps({'task': 'gp-l'})); (sft / 'log.csv').write_text('step,loss\n2,1.5\n4,1.25\n')
    record_run(sft, 'smoke')
    config = BaseConfig(max_steps=1)
    base = tmp_path / 'cache' / f'base-smoke-{config_hash(config)}'
    shutil.copytree(checkpoint, base / 'final')
    record_base(base, config)
    shutil.rmtree(tmp_path / 'cache'); shutil.rmtree(rl); shutil.rmtree(sft)
    log.write_text(''.join(log.read_text().splitlines(keepends=True)[:3]))    # the header and the first episode
    return tmp_path, {'evaluation': lambda: restore_evaluation(log, 'smoke'), 'RL run': lambda: restore_run(rl, 'smoke'),
                      'SFT run': lambda: restore_run(sft, 'smoke'), 'base': lambda: restore_base(base, config)}


def _contents(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.mark.parametrize('what,file', [
    ('evaluation', f'smoke/eval/{EVALUATION}.gz'), ('RL run', f'smoke/rl/{RUN}/run.json'), ('RL run', f'smoke/rl/{RUN}/log.jsonl'),
    ('RL run', f'smoke/rl/{RUN}/checkpoint-2/model.safetensors'), ('RL run', f'smoke/rl/{RUN}/checkpoint-2/tokenizer.json'),
    ('SFT run', 'smoke/sft/sft-gp-l-smoke-0123456789ab/log.csv'), ('base', 'base/*/base.json'), ('base', 'base/*/final/model.safetensors')])
def test_a_ledger_file_cut_short_is_refused_in_one_line_and_nothing_is_restored_or_lost(ledger, what, file):
    tmp, restore = ledger
    assert restore[what]() is True                                              # whole, the entry restores
    shutil.rmtree(tmp / 'cache', ignore_errors=True); shutil.rmtree(tmp / 'runs' / 'smoke' / 'rl', ignore_errors=True)
    shutil.rmtree(tmp / 'runs' / 'smoke' / 'sft', ignore_errors=True)
    log = tmp / 'runs' / 'smoke' / 'eval' / EVALUATION
    log.write_text(''.join(log.read_text().splitlines(keepends=True)[:3]))
    cut = next((tmp / 'ledger').glob(file))
    cut.write_bytes(cut.read_bytes()[:-3])                                      # the hardest cut: its last bytes lost
    here, kept = _contents(tmp / 'runs'), _contents(tmp / 'ledger')
    with pytest.raises(ValueError) as error:
        restore[what]()
    message = str(error.value)
    assert '\n' not in message and f'ledger file {cut} is corrupt or incomplete' in message and 'git checkout' in message, message
    assert _contents(tmp / 'runs') == here and not (tmp / 'cache').exists()    # nothing restored, the evaluation's episode kept
    assert _contents(tmp / 'ledger') == kept                                    # nothing deleted
