"""The repository's own promises: exported modules match the notebooks, notebooks are clean,
the README is rendered from nbs/index.ipynb, and the wheel carries the package."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _copy_project(tmp_path):
    for name in ('settings.ini', 'setup.py', 'pyproject.toml'):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / 'nbs', tmp_path / 'nbs')
    shutil.copytree(ROOT / 'sftrl', tmp_path / 'sftrl')
    return tmp_path


def _run(cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True)


def test_exported_modules_match_notebooks(tmp_path):
    project = _copy_project(tmp_path)
    _run([str(BIN / 'nbdev_export')], cwd=project)
    for exported in sorted((project / 'sftrl').glob('*.py')):
        committed = ROOT / 'sftrl' / exported.name
        assert committed.exists(), f'{exported.name} is exported from a notebook but not committed'
        assert exported.read_text() == committed.read_text(), f'sftrl/{exported.name} differs from its notebook: run make export'


def test_notebooks_are_clean(tmp_path):
    project = _copy_project(tmp_path)
    _run([str(BIN / 'nbdev_clean')], cwd=project)
    for nb in sorted((project / 'nbs').rglob('*.ipynb')):
        committed = ROOT / nb.relative_to(project)
        assert nb.read_text() == committed.read_text(), f'{committed.name} is not clean: run make clean-nbs'


def test_readme_is_rendered_from_index(tmp_path):
    _run([str(BIN / 'jupyter'), 'nbconvert', '--to', 'markdown', '--output-dir', str(tmp_path),
          '--output', 'README', str(ROOT / 'nbs' / 'index.ipynb')], cwd=ROOT)
    assert (tmp_path / 'README.md').read_text() == (ROOT / 'README.md').read_text(), 'README.md is stale: run make readme'


def test_wheel_contains_every_module(tmp_path):
    project = _copy_project(tmp_path)
    shutil.copy(ROOT / 'README.md', project / 'README.md')
    _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', 'dist', '.'], cwd=project)
    wheel, = (project / 'dist').glob('sftrl-*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (ROOT / 'sftrl').glob('*.py'):
        assert f'sftrl/{module.name}' in names, f'{module.name} is missing from the wheel'
    assert any(n.endswith('entry_points.txt') for n in names)


def test_a_wheel_reproduces_an_experiment_in_a_fresh_venv(tmp_path):
    """The experiment notebooks ship in the wheel (issue 20 item 5): installed into a fresh virtual environment, away from
    the checkout, `sftrl reproduce --preset smoke` runs one. The venv borrows this one's dependencies through a path file
    (no network here); its own site-packages holds the wheel, so neither it nor its kernel can import the checkout."""
    import json
    import os
    import sysconfig
    (tmp_path / 'project').mkdir()
    project = _copy_project(tmp_path / 'project')
    shutil.copy(ROOT / 'README.md', project / 'README.md')
    _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', 'dist', '.'], cwd=project)
    wheel, = (project / 'dist').glob('sftrl-*.whl')
    assert {f'sftrl/experiments/{nb.name}' for nb in (ROOT / 'nbs' / 'experiments').glob('*.ipynb')} <= set(zipfile.ZipFile(wheel).namelist())
    venv = tmp_path / 'venv'
    _run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], cwd=tmp_path)
    python = venv / 'bin' / 'python'
    purelib = Path(subprocess.run([str(python), '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / 'borrowed.pth').write_text(sysconfig.get_path('purelib') + '\n')   # torch, transformers, papermill, pip, ...
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    env['PATH'] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    subprocess.run([str(python), '-m', 'pip', 'install', '--no-deps', '--no-index', '--ignore-installed', '-q', str(wheel)],
                   cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    work = tmp_path / 'work'; work.mkdir()
    where = subprocess.run([str(python), '-c', 'import sftrl.driver as d; print(d.EXPERIMENTS); print(d.ROOT)'], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    assert where == [str(purelib / 'sftrl' / 'experiments'), str(work)]
    done = subprocess.run([str(venv / 'bin' / 'sftrl'), 'reproduce', '--preset', 'smoke', '--only', 'fig09_rl_without_sft',
                           '--set', 'learning_rates=[1e-3]', '--root', 'runs'], cwd=work, env=env, capture_output=True, text=True)   # the cheapest: one RL run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    csv = work / 'runs' / 'smoke' / 'figures' / 'fig09_rl_without_sft.csv'
    meta = dict(line[2:].split(': ', 1) for line in csv.read_text().splitlines() if line.startswith('# '))
    assert meta['preset'] == 'smoke' and meta['commit'] == 'unknown'    # drawn by the wheel's sftrl, outside any checkout
    assert json.loads((work / 'runs' / 'smoke' / 'notebooks' / 'fig09_rl_without_sft.done').read_text())['wall_seconds'] > 0
