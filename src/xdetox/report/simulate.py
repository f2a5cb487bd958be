"""Coverage of the reduction's 95% interval on simulated grids with a known true mean.

A grid has ``n_seeds`` training seeds crossed with ``n_prompts`` prompts; the difference
ZS − setting of prompt p in seed s is

    d_sp = mu + a_s + b_p + e_sp,  a_s ~ N(0, sd_seed²), b_p ~ N(0, sd_prompt²), e_sp ~ N(0, sd_noise²),

all independent, and each pair is missing with probability ``missing`` (at random).  The
target is ``mu``, the mean over the population of seeds and prompts.  ``coverage`` is the
share of grids whose interval holds ``mu``:

* ``method="seed_level"``: ``seed_level_test`` on the grid;
* ``method="pooled_bootstrap"``: what the report did before, ``paired_bootstrap`` over
  prompts, a prompt's difference averaged over the seeds that have it (seed variance
  left out).

``python -m xdetox.report.simulate [--grids N]`` prints the coverage of a few scenarios
with magnitudes like those of the real grid (seed sd about 0.1, per-prompt sd of the
differences about 0.25–0.3).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np

from xdetox.errors import XdetoxInputError
from xdetox.report.stats import BOOT_SEED, paired_bootstrap, seed_level_test

METHODS = ("seed_level", "pooled_bootstrap")
SIM_BOOT = 2_000  # bootstrap resamples per grid for method "pooled_bootstrap"


def coverage(
    n_grids: int = 1000,
    n_seeds: int = 3,
    n_prompts: int = 100,
    sd_seed: float = 0.1,
    sd_prompt: float = 0.2,
    sd_noise: float = 0.2,
    missing: float = 0.0,
    mu: float = 0.1,
    rng_seed: int = 0,
    method: str = "seed_level",
) -> float:
    """Share of ``n_grids`` simulated grids (model in the module docstring) whose 95%
    interval from ``method`` holds ``mu``.  Deterministic for a given ``rng_seed``."""
    if method not in METHODS:
        raise XdetoxInputError(f"coverage: method must be one of {METHODS}, got {method!r}")
    if n_grids < 1 or n_seeds < 1 or n_prompts < 1 or not 0 <= missing < 1:
        raise XdetoxInputError("coverage: needs n_grids, n_seeds, n_prompts >= 1 and 0 <= missing < 1")
    rng = np.random.default_rng(rng_seed)
    d = (mu + rng.normal(0.0, sd_seed, (n_grids, n_seeds, 1))
         + rng.normal(0.0, sd_prompt, (n_grids, 1, n_prompts))
         + rng.normal(0.0, sd_noise, (n_grids, n_seeds, n_prompts)))
    keep = rng.random(d.shape) >= missing
    keep[:, 0, 0] |= ~keep.any(axis=(1, 2))  # every grid keeps at least one pair
    covered = 0
    for grid, kept in zip(d, keep):
        if method == "seed_level":
            result = seed_level_test({s: dict(zip(np.flatnonzero(kept[s]).tolist(), grid[s, kept[s]].tolist()))
                                      for s in range(n_seeds)})
        else:
            counts = kept.sum(axis=0)
            prompts = np.flatnonzero(counts)
            means = (grid * kept).sum(axis=0)[prompts] / counts[prompts]
            result = paired_bootstrap(dict(zip(prompts.tolist(), means.tolist())), dict.fromkeys(prompts.tolist(), 0.0),
                                      n_boot=SIM_BOOT, seed=BOOT_SEED)
        covered += result.ci_low <= mu <= result.ci_high
    return covered / n_grids


SCENARIOS: tuple[tuple[str, dict], ...] = (
    ("seed-dominated", dict(sd_seed=0.1, sd_prompt=0.05, sd_noise=0.25)),
    ("prompt-dominated", dict(sd_seed=0.0, sd_prompt=0.25, sd_noise=0.1)),
    ("seed and prompt", dict(sd_seed=0.1, sd_prompt=0.2, sd_noise=0.2)),
    ("small seed effect", dict(sd_seed=0.03, sd_prompt=0.2, sd_noise=0.2)),
    ("seed and prompt, 20% missing", dict(sd_seed=0.1, sd_prompt=0.2, sd_noise=0.2, missing=0.2)),
    ("seed-dominated, 20% missing", dict(sd_seed=0.1, sd_prompt=0.05, sd_noise=0.25, missing=0.2)),
    ("one seed, sampling only", dict(n_seeds=1, sd_seed=0.0, sd_prompt=0.2, sd_noise=0.2)),
    ("seed-dominated", dict(sd_seed=0.1, sd_prompt=0.05, sd_noise=0.25, method="pooled_bootstrap")),
)
"""(name, ``coverage`` keyword arguments) of the table ``main`` prints: 3 seeds unless named."""


def main(argv: Sequence[str] | None = None) -> None:
    """Print the coverage of each scenario of ``SCENARIOS`` (100 prompts, mu 0.1)."""
    parser = argparse.ArgumentParser(prog="python -m xdetox.report.simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=int, default=1000, help="simulated grids per scenario (default 1000)")
    n_grids = parser.parse_args(argv).grids
    header = f"{'scenario':<30} {'method':<17} {'seeds':>5} {'sd_seed':>7} {'sd_prompt':>9} {'sd_noise':>8} " \
             f"{'missing':>7} {'coverage':>8} {'n_grids':>7} {'seconds':>7}"
    print(header)
    print("-" * len(header))
    for name, kwargs in SCENARIOS:
        options = {"n_seeds": 3, "missing": 0.0, "method": METHODS[0], **kwargs}
        start = time.perf_counter()
        share = coverage(n_grids=n_grids, **options)
        print(f"{name:<30} {options['method']:<17} {options['n_seeds']:>5} {options['sd_seed']:>7.2f} "
              f"{options['sd_prompt']:>9.2f} {options['sd_noise']:>8.2f} {options['missing']:>7.0%} "
              f"{share:>8.1%} {n_grids:>7} {time.perf_counter() - start:>7.1f}")


if __name__ == "__main__":
    main()
