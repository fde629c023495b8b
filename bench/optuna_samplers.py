#!/usr/bin/env python3
"""Optuna's TPESampler (its defaults, the seed given) on bench/tune_samplers'
objectives: one line per (objective, seed) with the trials it took until the
true objective of a suggested point was within the target.

Usage: optuna_samplers.py [SEEDS] [BUDGET]   (needs python3-optuna: scripts/setup --bench)
"""
import math
import sys

import numpy as np
import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)


def branin(x1, x2):
    b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1 * x1 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


ALPHA = [1.0, 1.2, 3.0, 3.2]
A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]
P = [[0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886], [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
     [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650], [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381]]


def hartmann6(x):
    return -sum(ALPHA[i] * math.exp(-sum(A[i][j] * (x[j] - P[i][j]) ** 2 for j in range(6))) for i in range(4))


def problems():
    def br(trial):
        return branin(trial.suggest_float("x1", -5, 10), trial.suggest_float("x2", 0, 15))

    def h6(trial):
        return hartmann6([trial.suggest_float("x%d" % j, 0, 1) for j in range(6)])

    return [("branin", br, 0.0, 0.5), ("hartmann6", h6, 0.0, -3.0), ("noisy_branin", br, 1.0, 0.5)]


def main():
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    budget = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    for name, f, noise, target in problems():
        for seed in range(1, seeds + 1):
            study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
            rng = np.random.RandomState(seed)
            reached = budget + 1
            for n in range(budget):
                trial = study.ask()
                truth = f(trial)
                if truth <= target:
                    reached = n + 1
                    study.tell(trial, truth)
                    break
                study.tell(trial, truth + noise * rng.normal())
            print("%s optuna_tpe %d %d" % (name, seed, reached), flush=True)


if __name__ == "__main__":
    main()
