"""Work another run already did, copied instead of computed (``--reuse RUN_DIR``).

Every row of a run's store is keyed by content: a training setting's key hashes its
model, recipe and training examples; an evaluation's key hashes the setting, target,
prompt set, decoding and seed. Two runs that share a key did the same work, so a new
run (the default ``xdetox run``, say, beside a grid that holds its ZS and X-FT from en)
may take it over row for row:

* the finished training settings and their evaluations, batches and completions;
* the scores of the new run's scorers, but only of those whose model is the one
  loaded today (the source store's ``scorer_identity:<name>`` must equal
  ``scorers.scorer_identity(name)``; a scorer whose name says all, such as ``ppl:embedded``
  or ``lang-fidelity``, records none on either side, as a resumed run keeps its scores): a
  rebuilt scorer scores again, it is never mixed;
* the reference measures of the reused settings, and their adapter directories when
  the source run still has them (checked against the recorded SHA-256). Without an
  adapter a setting's finished work is still reused; only unfinished work retrains it.

The source store is opened read-only and never changed. What is copied goes into the
new store in one transaction (``Store.merge_rows``): a run killed while reusing has
all of it or none.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from xdetox.errors import XdetoxInputError, refuse_repeats
from xdetox.grid import LENGTH_MATCHED, LENGTH_MATCHED_ZS, STORE_FILE, check_scorer_identity, file_sha256
from xdetox.store import Store


@dataclass(frozen=True)
class Reused:
    """What one source run gave: counts of rows per table and adapters copied."""

    source: Path
    rows: dict[str, int]
    adapters: int

    def line(self) -> str:
        return (f"reused from {self.source}: {self.rows.get('train_settings', 0)} training settings, "
                f"{self.rows.get('batches', 0)} batches, {self.rows.get('completions', 0)} completions, "
                f"{self.rows.get('scores', 0)} scores, {self.adapters} adapters")


@dataclass(frozen=True)
class Found:
    """The rows one source run holds of a plan's keys and its settings' adapters (read before anything
    is written)."""

    source: Path
    rows: dict[str, list[tuple]]
    adapters: list[tuple[str, str | None]]


def find_work(sources: Iterable[str | Path], train_keys: Iterable[str], eval_keys: Iterable[str],
              scorers: Iterable[str], run_dir: Path) -> list[Found]:
    """Read what each source run holds of these keys; a bad source is one line, nothing written."""
    from xdetox.scorers.registry import scorer_identity

    sources = list(map(Path, sources))
    refuse_repeats("--reuse", [s.resolve() for s in sources])  # a list is a set
    train_keys, eval_keys = set(train_keys), set(eval_keys)
    current = {name: scorer_identity(name) for name in scorers}
    found = []
    for source in sources:
        path = source / STORE_FILE
        if path.resolve() == (run_dir / STORE_FILE).resolve():
            raise XdetoxInputError(f"--reuse {source} is this run's own directory")
        found.append(Found(source, *read_rows(path, train_keys, eval_keys, current)))
    return found


def reuse_work(found: Iterable[Found], scorers: Iterable[str], run_dir: Path, store: Store) -> list[Reused]:
    """Copy the found rows into ``store`` (one transaction per source) and their adapters into ``run_dir``."""
    for name in scorers:  # this store's scores are of today's scorers (or dropped) before any are added
        check_scorer_identity(store, name)
    done = []
    for item in found:
        store.merge_rows(item.rows)
        adapters = copy_adapters(item.source, run_dir, item.adapters)
        done.append(Reused(item.source, {name: len(r) for name, r in item.rows.items()}, adapters))
    return done


def read_rows(path: Path, train_keys: set[str], eval_keys: set[str], scorer_identities: dict[str, str | None]
              ) -> tuple[dict[str, list[tuple]], list[tuple[str, str | None]]]:
    """The rows of the store at ``path`` that belong to these keys, with the scores of the scorers whose
    identity is today's, and the (path, sha256) of their settings' adapters (read-only; the file is not
    touched)."""
    if not path.is_file():
        raise XdetoxInputError(f"--reuse {path.parent} is not an xdetox run directory (no {path.name})")
    with Store(path, readonly=True) as source:  # checked first; an error later is named as every store's is
        same_scorers = set()
        for name, identity in scorer_identities.items():
            # absent: the name said all when the source scored; decided as a resumed run decides
            if source.get_meta(f"scorer_identity:{name}") == identity:
                same_scorers |= {name, name + LENGTH_MATCHED, name + LENGTH_MATCHED_ZS}
        rows = source.rows_of(train_keys, eval_keys, same_scorers)
        return rows, source.adapters(row[0] for row in rows["train_settings"])


def copy_adapters(source: Path, run_dir: Path, adapters: list[tuple[str, str | None]]) -> int:
    """Copy each reused setting's adapter directory (``adapters``: relative path and recorded SHA-256) that
    the source run still has and that matches its checksum; returns how many were copied."""
    copied = 0
    for relative, sha in adapters:
        origin, target = source / relative, run_dir / relative
        weights = origin / "adapter_model.safetensors"
        if (target / "adapter_model.safetensors").is_file() or not weights.is_file():
            continue
        if sha and file_sha256(weights) != sha:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        shutil.copytree(origin, tmp, dirs_exist_ok=True)
        tmp.rename(target)  # the same "renamed into place only when done" as a training
        copied += 1
    return copied
