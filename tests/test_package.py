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
