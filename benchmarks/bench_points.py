"""GeneralPoints throughput: episodes/s (reset + a correct step), verdicts/s on a mixed corpus, solver time per hand.

Run: .venv/bin/python benchmarks/bench_points.py   (prints figures; not a test)
"""
import itertools
import time

import numpy as np

import sftrl.cards as cards
from sftrl.cards import ID_RULE, OOD_RULE, deal_hand, solve
from sftrl.points import GeneralPointsEnv, verify


def _answer(formula, labels):
    return f'{{"cards": {labels}, "number": [], "formula": "{formula}",}}'


def episodes_per_second(n, **kw):
    "Reset with a fresh seed and answer correctly at once: n episodes, one env."
    env = GeneralPointsEnv.for_split('id', **kw)
    start = time.perf_counter()
    for seed in range(n):
        obs, info = env.reset(seed=seed)
        _, reward, terminated, _, _ = env.step(_answer(info['solution'] + '=24', info['cards']))
        assert reward == 5 and terminated
    return n / (time.perf_counter() - start)


def mixed_corpus(n_hands, seed=0):
    "(text, hand, rule) triples: correct, partial, wrong value/numbers, illegal, misrecognized, prose, JSON, hostile."
    rng, corpus = np.random.default_rng(seed), []
    for i in range(n_hands):
        rule = (ID_RULE, OOD_RULE)[i % 2]
        hand = deal_hand(rng, rule, face_card=rule is OOD_RULE)
        labels = [c.rank for c in hand]
        sol = solve(rule.values(hand))[0]
        texts = [_answer(sol + '=24', labels), _answer(sol[:-1], labels), _answer('1+2+3+4', labels),
                 _answer('(1+6)*3+13=24', labels), _answer(sol.replace('*', ' * '), labels),
                 _answer(sol, labels[::-1][:3] + ['K']), 'Sure! ' + _answer(sol, labels) + ' Hope this helps.',
                 f'{{"cards": {labels!r}, "formula": "{sol}"}}'.replace("'", '"'), '{"number": [1, 2]}',
                 _answer('(' * 300 + sol + ')' * 300, labels)]
        corpus += [(t, hand, rule) for t in texts]
    return corpus


def verdicts_per_second(corpus, mode, vision):
    start = time.perf_counter()
    for text, hand, rule in corpus: verify(text, hand, rule, vision=vision, mode=mode)
    return len(corpus) / (time.perf_counter() - start)


def solver_seconds_per_hand():
    "Mean solve() time over all 1,820 four-number multisets of 1..13 (cache cleared first), and cached."
    hands = list(itertools.combinations_with_replacement(range(1, 14), 4))
    if hasattr(cards._solutions, 'cache_clear'): cards._solutions.cache_clear()
    start = time.perf_counter()
    for hand in hands: solve(list(hand))
    cold = (time.perf_counter() - start) / len(hands)
    start = time.perf_counter()
    for hand in hands: solve(list(hand))
    return cold, (time.perf_counter() - start) / len(hands)


if __name__ == '__main__':
    print(f'episodes/s, GP-L text, cold caches:     {episodes_per_second(2000):8.0f}')
    print(f'episodes/s, GP-L text, warm caches:     {episodes_per_second(2000):8.0f}')
    for resolution, n in ((128, 300), (224, 200), (1200, 20)):
        cold = episodes_per_second(n, vision=True, resolution=resolution)
        warm = episodes_per_second(n, vision=True, resolution=resolution)
        print(f'episodes/s, GP-VL image at {resolution:4} px:    {cold:8.1f} cold, {warm:8.1f} warm (card images cached)')
    corpus = mixed_corpus(300)
    verify(*corpus[0][:2])   # warm the per-hand solution cache the verifier shares with the env
    for mode in ('exact', 'official'):
        for vision in (False, True):
            rate = verdicts_per_second(corpus, mode, vision)
            print(f'verdicts/s, {mode:8} {"GP-VL" if vision else "GP-L "} ({len(corpus)} mixed answers): {rate:8.0f}')
    cold, warm = solver_seconds_per_hand()
    print(f'solver: {cold * 1e3:.2f} ms per hand (uncached, all 1820 hands), {warm * 1e6:.1f} µs cached')
