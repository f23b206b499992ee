"""The `sftrl` command end to end, as the README's main command runs it."""
import json
import subprocess
import sys
from pathlib import Path

SFTRL = str(Path(sys.executable).parent / 'sftrl')


def test_demo_writes_an_episode(tmp_path):
    run = subprocess.run([SFTRL, 'demo', '--out', str(tmp_path), '--seed', '7', '--resolution', '224'],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert 'Correct solution.' in run.stdout
    episode = json.loads((tmp_path / 'episode.json').read_text())
    assert [t['category'] for t in episode['turns']][-1] == 'CORRECT_SOLUTION'
    assert (tmp_path / 'table.png').stat().st_size > 1000
    assert '## Turn 3' in (tmp_path / 'episode.md').read_text()


def test_demo_is_deterministic(tmp_path):
    for name in ('a', 'b'):
        subprocess.run([SFTRL, 'demo', '--out', str(tmp_path / name), '--seed', '11', '--vision', '--split', 'ood_visual',
                        '--resolution', '224'], check=True, capture_output=True, timeout=120)
    for f in ('episode.json', 'table.png'):
        assert (tmp_path / 'a' / f).read_bytes() == (tmp_path / 'b' / f).read_bytes()


def test_bad_arguments_say_what_is_wrong(tmp_path):
    run = subprocess.run([SFTRL, 'demo', '--out', str(tmp_path), '--split', 'ood_visual'], capture_output=True, text=True)
    assert run.returncode == 2 and 'split must be one of' in run.stderr
    run = subprocess.run([SFTRL], capture_output=True, text=True)
    assert run.returncode == 2 and 'required' in run.stderr
