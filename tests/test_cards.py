"""Properties of the GeneralPoints world (sftrl.cards): the solver's strings are exact solutions and
are the official solver's strings, dealing is reproducible and obeys each split, images are
deterministic. Formulas are evaluated by a small `ast` evaluator over ints and + - * / only."""
import ast
import hashlib
import json
from fractions import Fraction
from itertools import combinations_with_replacement, permutations, product

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sftrl.cards import (DECK, ID_RULE, OOD_RULE, RANKS, SUIT_SETS, Card, CardRule, CardStyle, _card_image,
                         deal_hand, is_solvable, render_card, render_table, solve)

card_numbers = st.integers(1, 13)
hands = st.lists(card_numbers, min_size=4, max_size=4)
_OPERATORS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
              ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}


def exact_value(text: str) -> Fraction:
    "The exact value of a formula of ints, + - * / and parentheses; anything else is rejected."
    def walk(node):
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return Fraction(node.value)
        raise ValueError(f'not allowed in a formula: {ast.dump(node)}')
    return walk(ast.parse(text, mode='eval').body)


def reference_solve(hand, target=24):
    """The official enumeration, written out independently: orderings x operator triples x bracket
    insertion points into the token list [a, op, b, op, c, op, d], each string evaluated exactly."""
    insertions = [(), (0, 4), (0, 6), (2, 6), (2, 8), (4, 8), (0, 4, 6, 10)]
    found = []
    for order in sorted(set(permutations(hand))):
        for ops in product('+-*/', repeat=3):
            tokens = [str(order[0]), ops[0], str(order[1]), ops[1], str(order[2]), ops[2], str(order[3])]
            for points in insertions:
                expression = list(tokens)
                for point, bracket in zip(points, '()' * 2):
                    expression.insert(point, bracket)
                text = ''.join(expression)
                try:
                    if exact_value(text) == target: found.append(text)
                except ZeroDivisionError:
                    pass
    return found


def reachable(values):
    "Every exact value any expression tree over `values` (each used once) can take."
    if len(values) == 1: return {values[0]}
    out = set()
    for i, j in permutations(range(len(values)), 2):
        rest = tuple(v for k, v in enumerate(values) if k not in (i, j))
        a, b = values[i], values[j]
        for c in [a + b, a - b, a * b] + ([a / b] if b else []):
            out |= reachable(rest + (c,))
    return out


def test_exact_value_rejects_anything_but_arithmetic():
    assert exact_value('8/(3-8/3)') == 24
    for hostile in ['__import__("os")', '2**5', '1.5*16', 'x+1', '-1+25', 'True+23']:
        with pytest.raises(ValueError):
            exact_value(hostile)


def test_golden_hand_from_the_official_verifier():
    solutions = solve([1, 3, 10, 6])
    assert len(solutions) == 70 and solutions[0] == '1*3*10-6'


@settings(max_examples=150, deadline=None)
@given(hands, st.integers(-5, 40))
def test_every_solution_evaluates_to_the_target(hand, target):
    for text in solve(hand, target):
        assert exact_value(text) == target
        assert sorted(int(t) for t in text.replace('(', ' ').replace(')', ' ').replace('+', ' ').replace('-', ' ')
                      .replace('*', ' ').replace('/', ' ').split()) == sorted(hand)


@settings(max_examples=12, deadline=None)
@given(hands, st.sampled_from([24, 24, 10, 1]))
def test_solve_lists_the_official_strings_in_order(hand, target):
    assert solve(hand, target) == reference_solve(hand, target)


# SHA-256 of json.dumps({'a,b,c,d': [solutions...]}) over all 1,820 sorted hands of 1..13, target 24,
# computed by running the official solver (gym_cards GeneralPointEnv_oneline.solve) with its
# random.shuffle of the orderings disabled: the official list, order included.
OFFICIAL_SOLUTIONS_SHA256 = '8455ec84b7f6aff86c64f9a3907efc96f82042adbcba6951dceb25a9f68dafdd'
OFFICIAL_SOLVABLE_HANDS, OFFICIAL_SOLUTION_STRINGS = 1362, 72287


def test_all_hands_match_the_official_solver():
    table = {','.join(map(str, h)): solve(list(h)) for h in combinations_with_replacement(range(1, 14), 4)}
    assert sum(bool(v) for v in table.values()) == OFFICIAL_SOLVABLE_HANDS
    assert sum(len(v) for v in table.values()) == OFFICIAL_SOLUTION_STRINGS
    assert hashlib.sha256(json.dumps(table).encode()).hexdigest() == OFFICIAL_SOLUTIONS_SHA256


@settings(max_examples=150, deadline=None)
@given(hands)
def test_the_bracket_patterns_miss_no_solvable_hand_of_24(hand):
    assert is_solvable(hand) == (24 in reachable(tuple(Fraction(x) for x in hand)))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-3, 20), min_size=4, max_size=4), st.integers(-30, 60))
def test_is_solvable_agrees_with_solve(hand, target):
    assert is_solvable(hand, target) == bool(solve(hand, target))
    assert solve(hand, target) == solve(list(reversed(hand)), target)


@pytest.mark.parametrize('bad', [[1, 2, 3], [1, 2, 3, 4, 5], [1, 2, 3, 4.0], [1, 2, 3, '4'], [1, 2, 3, None], [True, 2, 3, 4]])
def test_solve_rejects_malformed_hands(bad):
    with pytest.raises((ValueError, TypeError)):
        solve(bad)


def test_solve_returns_a_fresh_list():
    first = solve([1, 3, 10, 6])
    first.clear()
    assert len(solve([1, 3, 10, 6])) == 70


splits = st.sampled_from([dict(), dict(rule=OOD_RULE, face_card=True), dict(suits='black'), dict(suits='red'),
                          dict(rule=OOD_RULE, face_card=True, suits='black'), dict(replacement=False),
                          dict(rule=OOD_RULE, face_card=True, replacement=False)])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**63), splits)
def test_deal_hand_is_reproducible_and_obeys_its_split(seed, split):
    hand = deal_hand(np.random.default_rng(seed), **split)
    assert hand == deal_hand(np.random.default_rng(seed), **split)
    assert len(hand) == 4 and all(isinstance(c, Card) for c in hand)
    assert all(c.suit in SUIT_SETS[split.get('suits', 'mixed')] for c in hand)
    assert is_solvable(split.get('rule', ID_RULE).values(hand))
    if split.get('face_card'): assert any(c.is_face for c in hand)
    if split.get('replacement') is False: assert len(set(hand)) == 4


def test_deal_hand_draws_ranks_uniformly():
    rng = np.random.default_rng(0)
    counts = {r: 0 for r in RANKS}
    for _ in range(3000):
        for card in deal_hand(rng): counts[card.rank] += 1
    shares = np.array(list(counts.values())) / 12000
    assert shares.min() > 0.04 and shares.max() < 0.12  # solvability filtering skews only mildly


@pytest.mark.parametrize('bad', [dict(rng=0), dict(rng=np.random.RandomState(0)), dict(suits='green'),
                                 dict(suits=()), dict(suits=('S', 'X')), dict(rule={'jack': 11})])
def test_deal_hand_rejects_bad_arguments(bad):
    kwargs = dict(rng=np.random.default_rng(0)) | bad
    with pytest.raises((ValueError, TypeError)):
        deal_hand(**kwargs)


@pytest.mark.parametrize('rank,suit', [('T', 'S'), ('1', 'S'), ('k', 'S'), ('K', 's'), ('K', '♠'), (10, 'S'), ('', '')])
def test_card_rejects_unknown_ranks_and_suits(rank, suit):
    with pytest.raises(ValueError):
        Card(rank, suit)


def test_rules():
    assert [ID_RULE.value(r) for r in RANKS] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 10, 10]
    assert [OOD_RULE.value(r) for r in RANKS] == list(range(1, 14))
    assert CardRule(jack=0, ace=11).values(['J', 'A', '7']) == [0, 11, 7]


def _digest(img):
    return hashlib.sha256(img.tobytes()).hexdigest()


@pytest.mark.parametrize('resolution', [1200, 336, 224])
def test_render_table_is_deterministic(resolution):
    hand = [Card('10', 'H'), Card('Q', 'S'), Card('A', 'D'), Card('7', 'C')]
    first = _digest(render_table(hand, resolution))
    _card_image.cache_clear()
    assert _digest(render_table(hand, resolution)) == first
    assert render_table(hand, resolution).size == (resolution, resolution)


def test_cards_are_distinct_and_styles_change_pixels():
    assert len({_digest(render_card(c, (50, 70))) for c in DECK}) == 52
    card = Card('K', 'H')
    looks = [CardStyle(), CardStyle(red_ink='#000080'), CardStyle(centre='suit'), CardStyle(court_frame=False)]
    assert len({_digest(render_card(card, style=s)) for s in looks}) == len(looks)


def test_rendered_card_is_not_the_cached_object():
    card = Card('5', 'C')
    img = render_card(card)
    img.paste((255, 0, 0, 255), (0, 0, 270, 378))
    assert render_card(card).getpixel((135, 60)) != (255, 0, 0, 255)
