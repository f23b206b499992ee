"Every experiment notebook, run through papermill with the smoke preset, writes its figure and a non-trivial CSV."
import pytest

from sftrl.study import check_figure_csv, experiments, read_figure_csv, reproduce

# The columns each figure's CSV must hold (its plotted numbers), by notebook.
ARMS = ['task', 'split', 'arm', 'seed', 'step', 'gflops', 'episodes']
COLUMNS = {
    'fig01_virl_overall': ARMS + ['success', 'success_se'],
    'fig05_compute': ARMS + ['metric', 'value', 'se'],
    'fig06_rule_ood': ARMS + ['value', 'se', 'paper_value'],
    'fig07_visual_ood': ARMS + ['success', 'success_se', 'paper_value'],
    'fig08_recognition': ARMS + ['success', 'recognition_accuracy'],
    'fig09_rl_without_sft': ARMS + ['learning_rate', 'value', 'se'],
    'fig10_verification_budget': ARMS + ['budget', 'value', 'growth'],
    'fig15_suboptimal_sft': ARMS + ['value', 'se'],
    'fig16_vl_sft_learning_rates': ARMS + ['trainable', 'learning_rate', 'value'],
    'fig17_vl_rl_learning_rates': ARMS + ['learning_rate', 'value'],
    'fig18_virl_vl_overall': ARMS + ['success', 'success_se'],
    'fig19_overfitted_init': ARMS + ['learning_rate', 'value'],
    'ext_dpo': ARMS + ['metric', 'value', 'se'],
}
# The series each figure compares: a column and how many distinct values it must hold.
SERIES = {'fig09_rl_without_sft': ('learning_rate', 3), 'fig10_verification_budget': ('budget', 4),
          'fig15_suboptimal_sft': ('arm', 2), 'fig16_vl_sft_learning_rates': ('trainable', 3),
          'fig17_vl_rl_learning_rates': ('learning_rate', 2), 'fig19_overfitted_init': ('learning_rate', 2),
          'ext_dpo': ('arm', 4)}


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('reproduce')
    log = []
    reproduce('smoke', figures_dir=tmp / 'figures', root=tmp / 'runs', log=log.append, jobs=2)   # two kernels side by side
    return tmp, log


def test_every_notebook_is_checked():
    assert set(experiments()) == set(COLUMNS)


@pytest.mark.parametrize('name', sorted(COLUMNS))
def test_smoke_figure_written(smoke, name):
    tmp, _ = smoke
    assert (tmp / 'figures' / f'{name}.png').stat().st_size > 10_000
    data = check_figure_csv(tmp / 'figures' / f'{name}.csv', COLUMNS[name])
    column, count = SERIES.get(name, ('arm', 3))
    assert data[column].nunique() == count, data[column].unique()
    assert (data.gflops >= 0).all() and (data.gflops > 0).any() and (data.episodes == 6).all()
    assert read_figure_csv(tmp / 'figures' / f'{name}.csv')[1]['preset'] == 'smoke'
    assert (tmp / 'runs' / 'smoke' / 'notebooks' / f'{name}.done').exists()


def test_reproduce_resumes_and_skips_finished(smoke):
    tmp, _ = smoke
    log = []
    reproduce('smoke', figures_dir=tmp / 'figures', root=tmp / 'runs', log=log.append)
    assert sum('skipped' in line for line in log) == len(COLUMNS)


def _plotted(csv) -> list[str]:
    "A figure CSV's lines but its provenance ('# key: value': commit, wall time, machine)."
    return [line for line in csv.read_text().splitlines(keepends=True) if not line.startswith('# ')]


def test_a_second_reproduce_from_empty_caches_writes_the_same_figure_csvs(smoke, tmp_path, monkeypatch):
    """Seeded reruns are identical (issue 22): from an empty run folder (runs, evaluations), byte for byte but provenance.
    The base cache is shared: a base trained again is the same bytes too, but an RL run's identity holds its init's path."""
    first, _ = smoke
    names = ['fig09_rl_without_sft', 'fig15_suboptimal_sft']      # RL from the base, and SFT series: under a minute
    monkeypatch.setenv('SFTRL_FRESH', '1')                          # nothing read back from a ledger either (kernels inherit it)
    reproduce('smoke', only=names, figures_dir=tmp_path / 'figures', root=tmp_path / 'runs', log=lambda *a: None)
    for name in names:
        assert _plotted(tmp_path / 'figures' / f'{name}.csv') == _plotted(first / 'figures' / f'{name}.csv'), name


def test_checkpoints_are_named_by_run_not_by_machine(tmp_path, monkeypatch):
    from sftrl.study import _checkpoint_name
    monkeypatch.setenv('SFTRL_RUNS', str(tmp_path / 'cache'))
    assert _checkpoint_name(tmp_path / 'cache' / 'base' / 'base-smoke-1' / 'final', tmp_path / 'runs') == 'base/base-smoke-1/final'
    assert _checkpoint_name(tmp_path / 'runs' / 'smoke' / 'rl' / 'r' / 'checkpoint-2', tmp_path / 'runs') == 'smoke/rl/r/checkpoint-2'
