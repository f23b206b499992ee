"""The tiny RL recipe's learning-rate sweep (not run in CI). From an SFT checkpoint (the Init), a few updates of the tiny
recipe at each learning rate of `sftrl.rl.TINY_LEARNING_RATES`; per update the ID training reward (rollout success and mean
reward per turn), the approximate KL of the update, the clip fraction and KL to the Init; then the RL chapter's rule
(`sftrl.rl.choose_learning_rate`): among the rates whose every update kept approx_kl <= 0.05, the highest mean rollout
success over the last half of the updates. Only in-distribution training numbers are read.

Run: .venv/bin/python benchmarks/rl_lr_sweep.py CHECKPOINT gp-l [--updates 4] [--preset tiny] [--root runs/lr-sweep]
                                                [--set key=value ...]   (RLRun overrides, e.g. --set n_envs=8)
Runs are cached by their config under --root: a rerun prints the table again without training.
"""
import argparse

from sftrl.launch import parse_overrides
from sftrl.rl import TINY_LEARNING_RATES, RLRun, choose_learning_rate, learning_rate_sweep, rl_log, rl_run, train_rl

COLUMNS = ['update', 'success_rate', 'mean_reward', 'episodes', 'approx_kl', 'clip_fraction']


def sweep(init, task, updates=4, preset='tiny', rates=TINY_LEARNING_RATES, root='runs/lr-sweep', overrides=(), max_kl=0.05):
    "Train (or find) one short run per learning rate, print each one's log and the rule's table; the chosen rate (None if none) and the table."
    logs = {}
    for rate in rates:
        run = rl_run(preset, task, init=str(init), learning_rate=rate, updates=updates, checkpoints=1,
                     **parse_overrides(RLRun, list(overrides)))
        log = logs[rate] = rl_log(train_rl(run, root=root, progress=False))
        print(f'\nlearning rate {rate:g}')
        print(log[COLUMNS + [c for c in log if c.startswith('kl_init_')]].round(4).to_string(index=False))
    table = learning_rate_sweep(logs, max_kl)
    print(f'\nthe rule: mean rollout success over the last half of the updates, among rates with approx_kl <= {max_kl} in every update')
    print(table.to_string(index=False))
    chosen = choose_learning_rate(logs, max_kl)
    if chosen is not None: print(f'chosen learning rate: {chosen:g}')
    elif not table.within_kl.any(): print(f'no rate kept approx_kl <= {max_kl} in every update: sweep smaller rates')
    else: print('no episode ended in the last half of the updates of any rate within the bound: more turns per update (steps)')
    return chosen, table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('init', help='the SFT checkpoint folder RL starts from')
    parser.add_argument('task', help='gp-l, gp-vl, virl-l or virl-vl')
    parser.add_argument('--updates', type=int, default=4)
    parser.add_argument('--preset', default='tiny')
    parser.add_argument('--root', default='runs/lr-sweep')
    parser.add_argument('--rates', type=float, nargs='+', default=list(TINY_LEARNING_RATES))
    parser.add_argument('--set', dest='overrides', nargs='*', default=[], help='RLRun overrides, key=value')
    args = parser.parse_args(argv)
    return sweep(args.init, args.task, args.updates, args.preset, tuple(args.rates), args.root, args.overrides)


if __name__ == '__main__':
    main()
