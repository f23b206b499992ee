"""The foundation corpus: deterministic, correct in every worked line, and free of the tasks' formats."""
import re
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sftrl.base import (DOCUMENT_KINDS, base_corpus, search_doc, arithmetic_doc, rule_doc, random_rule, task_markers)
from sftrl.cards import CardRule
from sftrl.points import formula_value


def test_corpus_is_deterministic_and_seed_dependent():
    assert base_corpus(200, seed=7) == base_corpus(200, seed=7)
    assert base_corpus(200, seed=7) != base_corpus(200, seed=8)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_no_task_format_in_the_corpus(seed):
    text = '\n'.join(base_corpus(10000, seed=seed))
    assert [m for m in task_markers() if m in text] == []


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_every_arithmetic_line_is_exact(seed):
    for line in arithmetic_doc(np.random.default_rng(seed)).split('\n'):
        if ' = ' in line:
            expr, value = line.split(' = ')
            assert formula_value(expr) == Fraction(value)
        else:
            assert formula_value(line.split(' has no value')[0]) is None


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([None, 24, 10]))
def test_every_search_ends_truthfully(seed, target):
    doc = search_doc(np.random.default_rng(seed), target)
    numbers = [int(n) for n in re.match(r'Make (\d+) from ([\d, ]+)\.', doc).group(2).split(', ')]
    goal = int(re.match(r'Make (\d+)', doc).group(1))
    last = doc.split('\n')[-1]
    found = re.search(r'(?:Yes|One way): (.+) = (\d+)\.$', last)
    if found:
        expr = found.group(1)
        assert formula_value(expr) == goal
        assert sorted(int(n) for n in re.findall(r'\d+', expr)) == sorted(numbers)
    else:
        assert last == f'There is no way to make {goal}.'
    for step in re.findall(r'(\(?-?\d+(?:/\d+)?\)?)([+\-*/])(\(?-?\d+(?:/\d+)?\)?)=(-?\d+(?:/\d+)?)', doc):
        a, op, b, result = (s.strip('()') for s in step)
        a, b = Fraction(a), Fraction(b)
        assert {'+': a + b, '-': a - b, '*': a * b, '/': a / b if b else None}[op] == Fraction(result)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_rules_are_applied_as_stated(seed):
    rng = np.random.default_rng(seed)
    doc = rule_doc(rng)
    rule = random_rule(np.random.default_rng(seed))
    for hand, values in re.findall(r'The hand (.+) is worth (.+)\.', doc):
        assert [int(v) for v in values.split(', ')] == rule.values(hand.split(', '))


def test_both_paper_rules_appear():
    rules = {random_rule(np.random.default_rng(s)) for s in range(200)}
    assert CardRule() in rules and CardRule(11, 12, 13) in rules


def test_bad_mixture_is_refused():
    with pytest.raises(ValueError, match='unknown document kinds'):
        base_corpus(3, mixture={'novels': 1.0})
    assert set(DOCUMENT_KINDS) >= {'arithmetic', 'search', 'rule', 'card', 'turn', 'route'}


def test_the_rule_reading_script_probes_the_base_and_each_sft_checkpoint(tmp_path, capsys):
    "benchmarks/rule_reading.py on the smoke preset: the generic probes, then the forced probe at the base and the SFT checkpoints."
    import runpy
    from pathlib import Path
    script = runpy.run_path(str(Path(__file__).parents[1] / 'benchmarks' / 'rule_reading.py'))
    table = script['main'](['--preset', 'smoke', '--scales', '1', '--sft-steps', '2', '--hands', '4', '--probes', '5',
                            '--root', str(tmp_path)])
    out = capsys.readouterr().out
    assert 'generic probes' in out and 'stated mapping, held-out symbols' in out and 'forced rule reading' in out
    assert set(table.split) == {'ood_rule', 'id'} and table.sft_step.iloc[0] == 0 and table.sft_step.max() > 0
    assert (table.face_cards >= 4).all() and table[['as_rule', 'as_10']].stack().between(0, 1).all()
    assert (table.query("split == 'id'").as_rule == table.query("split == 'id'").as_10).all()   # ID: the rule's value is 10
    items = script['forced_items']('ood_rule', 3)
    assert all(prefix.endswith('"number": [') and set(cards) & {'J', 'Q', 'K'} for _, prefix, cards in items)
