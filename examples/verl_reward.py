"""verl: the reward function of sftrl's four tasks, and their data in verl's format.

Reward: name this file in verl's config, `custom_reward_function.path=examples/verl_reward.py`;
`custom_reward_function.name` defaults to `compute_score`, the function this file provides. verl calls
it as `compute_score(data_source, solution_str, ground_truth, extra_info)` on each decoded response; it
returns the sftrl verifier's reward for a first try (GeneralPoints: -3 up to 5; V-IRL: -1.75 up to 1).

Data: `python examples/verl_reward.py --task gp-l --split train --n 1000 --out data/gp-l/train.parquet`
writes one row per position (data_source, prompt, images for gp-vl and virl-vl, ability, reward_model,
extra_info); pass the file as `data.train_files` (and an `id` or `ood_rule` split as `data.val_files`).

See nbs/12_rewards.ipynb (sftrl.rewards) for what the rows hold and how the score is checked.
"""
import argparse

from sftrl.rewards import compute_score, episodes_dataset, verl_row

__all__ = ['compute_score', 'main']


def main(argv=None) -> str:
    "Write `--n` episodes of `--task`/`--split` as verl RL parquet to `--out`; the path written."
    parser = argparse.ArgumentParser(description='sftrl episodes as verl RL parquet')
    parser.add_argument('--task', default='gp-l', help='gp-l, gp-vl, virl-l or virl-vl')
    parser.add_argument('--split', default='train', help='train, id, ood_rule or ood_visual')
    parser.add_argument('--n', type=int, default=1000, help='episodes (a V-IRL episode gives a row per position)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', required=True, help='the parquet file to write')
    args = parser.parse_args(argv)
    rows = episodes_dataset(args.task, args.split, args.n, args.seed)
    rows.map(verl_row, with_indices=True, remove_columns=rows.column_names).to_parquet(args.out)
    return args.out


if __name__ == '__main__':
    print(main())
