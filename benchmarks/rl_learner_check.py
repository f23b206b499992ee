"""Does the RL learner learn what it sees again? (not run in CI; the RL chapter's *A third look*). From an SFT checkpoint
(the Init), the tiny recipe with every training episode dealt from the same few training hands (`--hands`, default 8),
at each learning rate given; per update the rollout success on those hands, the mean reward per turn, the update's
approximate KL and KL to the Init. A learner that works raises the success on hands it plays again and again; the
recipe's real runs deal each hand to one group once.

Run: .venv/bin/python benchmarks/rl_learner_check.py CHECKPOINT [--task gp-l] [--hands 8] [--rates 1e-4 1e-5]
                                                     [--preset tiny] [--root runs/learner-check] [--set key=value ...]
A rate above 3e-5 warms up over 3 updates (the chapter's probe). Runs are cached by their config under --root, one folder
per pool size: a rerun prints the tables again without training.
"""
import argparse
from pathlib import Path

import sftrl.rl as rl
from sftrl.launch import parse_overrides
from sftrl.tasks import training_seeds

COLUMNS = ['update', 'success_rate', 'mean_reward', 'episodes', 'approx_kl', 'kl_init_id', 'entropy']


def deal_from(hands: int):
    "Make every training episode one of the first `hands` training hands of seed 0 (`collect` draws training seeds through `sftrl.rl`)."
    pool = training_seeds(0, hands)
    rl.training_seeds = lambda seed, n: [pool[i % hands] for i in range(n)]


def check(init, task='gp-l', hands=8, rates=(1e-4, 1e-5), preset='tiny', root='runs/learner-check', overrides=()):
    "Train (or find) one run per rate on the pool of `hands` hands and print its log; the logs by rate."
    deal_from(hands)
    logs = {}
    for rate in rates:
        run = rl.rl_run(preset, task, init=str(init), learning_rate=rate, warmup_updates=3 if rate > 3e-5 else 0,
                        **parse_overrides(rl.RLRun, list(overrides)))
        logs[rate] = rl.rl_log(rl.train_rl(run, root=Path(root) / f'{hands}-hands', progress=False))
        print(f'\n{hands} training hands, learning rate {rate:g}')
        print(logs[rate][COLUMNS].round(4).to_string(index=False))
    return logs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('init', help='the SFT checkpoint folder RL starts from')
    parser.add_argument('--task', default='gp-l')
    parser.add_argument('--hands', type=int, default=8)
    parser.add_argument('--rates', type=float, nargs='+', default=[1e-4, 1e-5])
    parser.add_argument('--preset', default='tiny')
    parser.add_argument('--root', default='runs/learner-check')
    parser.add_argument('--set', dest='overrides', nargs='*', default=[], help='RLRun overrides, key=value')
    args = parser.parse_args(argv)
    return check(args.init, args.task, args.hands, args.rates, args.preset, args.root, args.overrides)


if __name__ == '__main__':
    main()
