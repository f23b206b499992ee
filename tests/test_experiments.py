"Every experiment notebook, run through papermill with the smoke preset, writes its figure and a non-trivial CSV."
import pytest

from sftrl.study import check_figure_csv, experiments, read_figure_csv, reproduce

# The columns each figure's CSV must hold (its plotted numbers), by notebook.
COLUMNS = {
    'fig05_compute': ['task', 'split', 'arm', 'seed', 'gflops', 'metric', 'value', 'se', 'episodes'],
    'fig06_rule_ood': ['task', 'arm', 'seed', 'gflops', 'value', 'se', 'paper_value'],
}


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('reproduce')
    log = []
    reproduce('smoke', figures_dir=tmp / 'figures', root=tmp / 'runs', log=log.append)
    return tmp, log


def test_every_notebook_is_checked():
    assert set(experiments()) == set(COLUMNS)


@pytest.mark.parametrize('name', sorted(COLUMNS))
def test_smoke_figure_written(smoke, name):
    tmp, _ = smoke
    assert (tmp / 'figures' / f'{name}.png').stat().st_size > 10_000
    data = check_figure_csv(tmp / 'figures' / f'{name}.csv', COLUMNS[name])
    assert set(data.arm) == {'Init', 'SFT', 'RL'} and (data.gflops > 0).all()
    assert read_figure_csv(tmp / 'figures' / f'{name}.csv')[1]['preset'] == 'smoke'
    assert (tmp / 'runs' / 'smoke' / 'notebooks' / f'{name}.done').exists()


def test_reproduce_resumes_and_skips_finished(smoke):
    tmp, _ = smoke
    log = []
    reproduce('smoke', figures_dir=tmp / 'figures', root=tmp / 'runs', log=log.append)
    assert sum('skipped' in line for line in log) == len(COLUMNS)
