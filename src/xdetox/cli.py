"""The ``xdetox`` command: parse arguments, call the stages, print. No logic lives here.

Exit codes:

- 0: success;
- 2: bad input -- a flag, config, data file, model, store or text the command cannot use;
  one line on stderr (``xdetox: error: ...``), and nothing written: every check runs
  before a run directory or store is created, and an existing store is opened
  read-only until it is known to be an xdetox store;
- 3: a service the command needs is unavailable (Perspective);
- 130: interrupted (Ctrl-C): one line on stderr; a run resumes with the same command;
- 1: anything else (a bug: the traceback is printed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from xdetox._io import atomic_write, quiet_libraries
from xdetox.errors import ServiceUnavailable, XdetoxInputError

class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit code 2."""

    def error(self, message: str):  # noqa: D401
        raise XdetoxInputError(message)


def _langs(value: str, flag: str = "--targets") -> tuple[str, ...]:
    from xdetox.data import LANGS, check_langs

    if value == "all":
        return LANGS
    langs = tuple(v.strip() for v in value.split(",") if v.strip())
    if not langs:
        raise XdetoxInputError(f"{flag} needs at least one language code")
    return tuple(check_langs(list(langs)))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="xdetox", description="Cross-lingual detoxification by supervised fine-tuning.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="ZS vs X-FT toxicity on every target language")
    run.add_argument("--model", default="embedded", help="'embedded' (default), an HF model id or a local directory")
    run.add_argument("--data", default=None, help="JSONL/CSV with lang,toxic,neutral[,id,split] (default: bundled corpus)")
    run.add_argument("--source", default="en", help="language the adapter is trained on (default en)")
    run.add_argument("--targets", default="all", help="comma-separated target languages, or 'all' (default)")
    run.add_argument("--split", default="test_toxic", help="train_toxic, test_toxic (default) or test_neutral")
    run.add_argument("--limit", type=int, default=None, help="use only the first N prompts per target")
    run.add_argument("--epochs", type=int, default=3)
    run.add_argument("--seed", type=int, default=42)
    run.add_argument("--lr", type=float, default=2e-4, help="learning rate (default 2e-4)")
    run.add_argument("--lora-r", type=int, default=16)
    run.add_argument("--lora-alpha", type=int, default=32)
    run.add_argument("--lora-dropout", type=float, default=0.05)
    run.add_argument("--train-batch-size", type=int, default=8)
    run.add_argument("--batch-size", type=int, default=16, help="generation batch size")
    run.add_argument("--max-new-tokens", type=int, default=50)
    run.add_argument("--temperature", type=float, default=0.7)
    run.add_argument("--top-p", type=float, default=0.9)
    run.add_argument("--samples", type=int, default=1, help="completions per prompt")
    run.add_argument("--dtype", default="auto", help="auto (default), bfloat16, float32 or float16")
    run.add_argument("--trust-remote-code", action="store_true")
    run.add_argument("--scorer", default="offline")
    run.add_argument("--no-zs", action="store_true", help="skip the zero-shot baseline")
    run.add_argument("--out", default=None, help="run directory (default runs/<timestamp>); an existing run resumes")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--reuse", action="append", default=[], metavar="RUN_DIR",
                     help="copy the work another run already did with the same content keys (repeatable)")

    grid = sub.add_parser("grid", help="the whole experiment grid from a TOML config")
    grid_sub = grid.add_subparsers(dest="grid_command", required=True, parser_class=_Parser)
    plan = grid_sub.add_parser("plan", help="list the training settings and count the evaluations")
    plan.add_argument("config", help="TOML config (see configs/)")
    grid_run = grid_sub.add_parser("run", help="run (or resume) every setting of a config")
    grid_run.add_argument("config", help="TOML config (see configs/)")
    grid_run.add_argument("--out", default=None, help="run directory (default runs/<config name>); resumes")
    grid_run.add_argument("--quiet", action="store_true", help="no progress bars")
    grid_run.add_argument("--reuse", action="append", default=[], metavar="RUN_DIR",
                          help="copy the work another run already did with the same content keys (repeatable)")
    grid_run.add_argument("--backend", choices=("local", "ray"), default="local",
                          help="local (default): this process; ray: one Ray task per training setting")
    grid_run.add_argument("--address", default=None,
                          help="with --backend ray: a running Ray cluster (host:port or auto);"
                               " default: start a local one")

    from xdetox.bench import BatchSizes as BenchBatchSizes  # torch-free

    bench = sub.add_parser("bench", help="generation speed vs the reference pattern; LoRA training speed")
    bench.add_argument("--prompts", type=int, default=64, help="prompts per generator (default 64)")
    bench.add_argument("--model", default="embedded")
    bench.add_argument("--lang", default="en", help="language of the prompts and training texts")
    bench.add_argument("--batch-size", action=BenchBatchSizes, default=16, metavar="N[,N...]",
                       help="xdetox generation batch size (default 16); several (8,16,32 or the flag repeated):"
                            " a sweep, tokens/s per size")
    bench.add_argument("--train-examples", type=int, default=300, help="examples in the timed LoRA epoch")
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    bench.add_argument("--profile", action="store_true",
                       help="also profile xdetox's generator (torch.profiler): where the time goes")

    export = sub.add_parser("export", help="one tuned setting of a run as a standalone model + model card")
    export.add_argument("run_dir", help="a finished xdetox run directory")
    export.add_argument("--setting", required=True, help="x-ft:<lang>, p-ft:<percent>%%, m-ft or dpo:<lang>")
    export.add_argument("--seed", type=int, default=None, help="which seed, when the run has several")
    export.add_argument("--out", required=True, help="new (or empty) directory to write the export into")
    export.add_argument("--no-merge", action="store_true", help="write the PEFT adapter instead of merged weights")
    export.add_argument("--dtype", default="bfloat16", help="merged weights: bfloat16 (default) or float32")

    report = sub.add_parser("report", help="rebuild a run's report from its store")
    report.add_argument("run_dir")

    score = sub.add_parser("score", help="score texts, one per line, with a toxicity scorer")
    score.add_argument("--scorer", default="offline",
                       help="offline (default), perspective or hf:<model id or path>[#<label>]")
    score.add_argument("--lang", required=True, help="language of the texts, e.g. en")
    score.add_argument("file", help="one text per line ('-': stdin); a line empty after normalisation prints nan")
    score.add_argument("--json", action="store_true",
                       help='one JSON object per line: {"toxicity": value or null, "flags": [...]}')

    scorer = sub.add_parser("scorer", help="toxicity scorer tools")
    scorer_sub = scorer.add_subparsers(dest="scorer_command", required=True, parser_class=_Parser)
    ev = scorer_sub.add_parser("eval", help="a toxicity scorer's validation figures per language (cached)")
    ev.add_argument("--scorer", default="offline", help="any toxicity scorer (default offline)")
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check = scorer_sub.add_parser("check", help="the behavioural suite: accuracy per language and functionality")
    check.add_argument("--scorer", default="offline", help="any toxicity scorer (default offline)")
    check.add_argument("--langs", default="all", help="comma-separated languages, or 'all' (default)")
    check.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        args = build_parser().parse_args(argv)
        quiet_libraries()
        if args.command == "run":
            return cmd_run(args)
        if args.command == "grid":
            return cmd_grid_plan(args) if args.grid_command == "plan" else cmd_grid_run(args)
        if args.command == "bench":
            return cmd_bench(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "score":
            return cmd_score(args)
        if args.command == "scorer":
            return cmd_scorer_eval(args) if args.scorer_command == "eval" else cmd_scorer_check(args)
    except XdetoxInputError as err:
        print(f"xdetox: error: {err}", file=sys.stderr)
        return 2
    except ServiceUnavailable as err:
        running = args.command == "run" or (args.command == "grid" and args.grid_command == "run")
        resume = "; the run is resumable: run the same command again" if running else ""
        print(f"xdetox: error: {err}{resume}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("xdetox: interrupted", file=sys.stderr)
        return 130
    return 1


def _config_from_args(args) -> "GridConfig":  # noqa: F821
    """``xdetox run`` is a one-source grid: ZS + X-FT from --source on the --targets."""
    from xdetox.generate import DecodeSpec
    from xdetox.grid import GridConfig
    from xdetox.models import DTYPES, ModelSpec
    from xdetox.train import LoraSpec, TrainSpec

    if args.dtype not in DTYPES:
        raise XdetoxInputError(f"unknown --dtype {args.dtype!r}; choose one of {', '.join(DTYPES)}")
    train = TrainSpec(
        paradigm="x-ft", source=args.source, epochs=args.epochs, seed=args.seed,
        learning_rate=args.lr, batch_size=args.train_batch_size,
        lora=LoraSpec(r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout),
    )
    decode = DecodeSpec(
        temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
        samples_per_prompt=args.samples, batch_size=args.batch_size,
    )
    return GridConfig(
        name="run",
        models=(ModelSpec(name=args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code),),
        paradigms=("x-ft",) if args.no_zs else ("zs", "x-ft"),
        sources=(args.source,), targets=_langs(args.targets), splits=(args.split,), limit=args.limit,
        seeds=(args.seed,), scorers=(args.scorer,), train=train, decode=decode,
        data_path=str(Path(args.data).resolve()) if args.data else None,
    )


def _prepare_out(out: str | None, config_dict: dict, plan_id: str) -> Path:
    """Check --out before anything is written; an existing run resumes only if it plans the same work.

    Same work = the same evaluation keys (models, training settings, data, decoding, seeds,
    prompts). Scorers, measures and resources may change between invocations: what a new
    scorer or measure needs is computed for the finished settings too.
    """
    from xdetox.grid import STORE_FILE
    from xdetox.store import Store

    if out is None:
        return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise XdetoxInputError(f"--out {out} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        if not (path / STORE_FILE).is_file():
            raise XdetoxInputError(f"--out {out} is a non-empty directory that is not an xdetox run")
        with Store(path / STORE_FILE, readonly=True) as store:  # a damaged or foreign file is refused untouched
            previous_plan, previous = store.get_meta("plan_id"), store.get_meta("config")
        same = previous_plan == plan_id if previous_plan is not None else previous in (None, config_dict)
        if not same:
            raise XdetoxInputError(f"--out {out} holds a run with a different configuration; choose another --out")
    return path


def cmd_run(args) -> int:
    return _execute(_config_from_args(args), args.out, quiet=args.quiet, reuse=args.reuse)


def cmd_grid_plan(args) -> int:
    from xdetox import data, grid
    from xdetox.scorers.registry import check_languages, check_scorer

    config = grid.load_config(args.config)
    corpus = data.load(config.data_path)
    plan = grid.make_plan(config, corpus)
    for scorer in config.scorers:  # a scorer the run would refuse is refused by its plan too
        check_scorer(scorer)
        check_languages(scorer, config.targets)
    print(grid.plan_table(plan, corpus))
    print()
    print(plan.decomposition())
    return 0


def cmd_grid_run(args) -> int:
    from xdetox import grid

    config = grid.load_config(args.config)
    out = args.out if args.out is not None else str(Path("runs") / config.name)
    if args.address is not None and args.backend != "ray":
        raise XdetoxInputError("--address needs --backend ray")
    return _execute(config, out, quiet=args.quiet, backend=args.backend, address=args.address, reuse=args.reuse)


def _execute(config, out: str | None, quiet: bool, backend: str = "local", address: str | None = None,
             reuse: list[str] = ()) -> int:
    """Validate everything, then run (or resume) the plan and write the report."""
    from xdetox import data, grid, report
    from xdetox.store import Store

    if backend == "ray":
        from xdetox import distributed

        distributed.import_ray()  # not installed: one line, before any work
    corpus = data.load(config.data_path)
    plan = grid.make_plan(config, corpus)
    grid.check_runnable(config, here=backend == "local")
    from xdetox.generate import choose_generator

    # an explicit vllm that cannot run here says so, once; ray tasks choose on their own machines
    generator = choose_generator(config.generator) if backend == "local" else config.generator
    config_dict = config.to_dict()
    run_dir = _prepare_out(out, config_dict, plan.identity())
    found = []
    if reuse:  # read (and checked) before anything is written
        from xdetox.reuse import find_work

        found = find_work(reuse, [s.key for s in plan.settings], [e.key for e in plan.evaluations],
                          config.scorers, run_dir)

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"xdetox: {config.name} -> {run_dir}  ({plan.decomposition()})", file=sys.stderr)
    with Store(run_dir / grid.STORE_FILE) as store:
        store.begin_attempt(started)  # this attempt's start, end and outcome: summary wall/total time
        store.set_meta("config", config_dict)
        store.set_meta("plan_id", plan.identity())
        store.set_meta("planned_evaluations", len(plan.evaluations))
        if found:
            from xdetox.reuse import reuse_work

            for done in reuse_work(found, config.scorers, run_dir, store):
                print(f"xdetox: {done.line()}", file=sys.stderr)
        try:
            if backend == "ray":
                devices = distributed.execute(plan, corpus, run_dir, store, progress=not quiet, address=address)
            else:
                grid.execute(plan, corpus, run_dir, store, progress=not quiet)
        except BaseException as err:
            with contextlib.suppress(Exception):  # never hide why the run stopped
                store.end_attempt("interrupted" if isinstance(err, KeyboardInterrupt) else "failed")
            print(f"xdetox: run stopped before it finished; the same command resumes it from {run_dir}",
                  file=sys.stderr)
            raise
        store.end_attempt("finished")
        elapsed = time.perf_counter() - t0
        store.set_meta("started", store.get_meta("started") or started)
        environment = grid.environment()
        environment["generator"] = generator
        if backend == "ray":  # the tasks' devices, not the driver's
            previous = store.get_meta("environment") or {}
            environment["device"] = ", ".join(devices) if devices else previous.get("device", environment["device"])
        store.set_meta("environment", environment)
        summary = _write_outputs(run_dir, store)
    print(report.print_table(summary))
    print(f"\nwrote {run_dir}/summary.json and the report ({elapsed:.0f} s)")
    return 0


def _write_outputs(run_dir: Path, store) -> dict:
    """Completions file + report from the store alone (so `xdetox report` gives the same)."""
    from xdetox import grid, report
    from xdetox.models import ModelSpec

    config = store.get_meta("config")
    if config is None:  # killed before its first write: nothing to report
        raise XdetoxInputError(f"{run_dir} holds no run configuration yet; run the same command again to resume")
    env = store.get_meta("environment", {})
    missing = store.missing_work(store.get_meta("planned_evaluations", 0))
    if missing:
        raise XdetoxInputError(f"{run_dir} is not finished ({missing}); run the same command again to resume")
    from xdetox.scorers.registry import scorer_kind, scorer_validation
    from xdetox.text import is_silent
    from xdetox.train import end_token_trained

    kinds = {name: scorer_kind(name) for name in config["scorers"]}
    ppl_scorer = next((s for s, kind in kinds.items() if kind == "fluency"), None)
    lang_scorer = next((s for s, kind in kinds.items() if kind == "language"), None)
    toxicity_scorers = [s for s, kind in kinds.items() if kind == "toxicity"]
    if not toxicity_scorers:
        raise XdetoxInputError("the run has no toxicity scorer; add one to scorers")
    scorer = toxicity_scorers[0]
    frame = store.completions_frame(scorer)
    extras = [("ppl", ppl_scorer), ("lang_fidelity", lang_scorer)]
    extras += [(report.EXTRA_TOXICITY + name, name) for name in toxicity_scorers[1:]]
    for column, extra in extras:
        if extra is not None:  # measures of the same completions, in the same row order
            frame[column] = store.completions_frame(extra)["toxicity"].to_numpy()
    written = ~frame["completion"].map(is_silent)  # silent completions are never scored
    if frame[written].drop(columns=["source", "percent"]).isna().any().any():
        raise XdetoxInputError(f"{run_dir} is not finished (unscored completions); run it again to resume")
    for column, suffix in ((report.LM_COLUMN, grid.LENGTH_MATCHED), (report.LM_ZS_COLUMN, grid.LENGTH_MATCHED_ZS)):
        frame[column] = store.completions_frame(scorer + suffix)["toxicity"].to_numpy()
    training = tuple(
        {"model": row.model, "setting": row.label, "seed": int(row.seed)} | ({} if row.paradigm == "zs" else {
            **_recipe(json.loads(row.spec)), "end_token_trained": end_token_trained(**_objective(row))})
        for row in store.table("train_settings").itertuples()
    )
    atomic_write(run_dir / grid.COMPLETIONS_FILE,
                 lambda p: frame.to_json(p, orient="records", lines=True, force_ascii=False))
    train = config["train"]
    info = report.RunInfo(
        model=", ".join(ModelSpec(**m).display_name for m in config["models"]),
        scorer=scorer,
        seeds=tuple(config["seeds"]),
        epochs=train["epochs"],
        limit=config["limit"],
        decode={**config["decode"], "generator": env.get("generator", "transformers")},
        lora={**train["lora"], "learning_rate": train["learning_rate"], "batch_size": train["batch_size"],
              "objective": train["objective"]},
        versions=env.get("versions", {}),
        device=env.get("device", "unknown"),
        **store.times(),  # wall_time_s (the latest attempt), total_time_s (all attempts), attempts
        started=store.get_meta("started", ""),
        config_name=config["name"],
        ppl_scorer=ppl_scorer,
        lang_scorer=lang_scorer,
        training=training,
        scorer_validation=scorer_validation(scorer),
    )
    return report.write_report(run_dir, frame, info, measures=store.measures_frame())


def _recipe(spec: dict) -> dict:
    keys = ("objective", "epochs", "batch_size", "gradient_accumulation_steps", "max_length", "learning_rate")
    return {key: spec.get(key) for key in keys}


def _objective(row) -> dict:
    return {"paradigm": row.paradigm, "objective": json.loads(row.spec).get("objective", "neutral-lm")}


def cmd_bench(args) -> int:
    from xdetox import bench

    spec = bench.BenchSpec(model=args.model, prompts=args.prompts, lang=args.lang, batch_size=args.batch_size,
                           profile=args.profile,
                           train_examples=args.train_examples)
    result = bench.run(spec, progress=lambda line: print(line, file=sys.stderr))
    print(json.dumps(result, indent=2) if args.json else bench.format_table(result))
    return 0


def cmd_report(args) -> int:
    from xdetox import grid, report
    from xdetox.store import Store

    run_dir = Path(args.run_dir)
    if not (run_dir / grid.STORE_FILE).is_file():
        raise XdetoxInputError(f"{run_dir} is not an xdetox run directory (no {grid.STORE_FILE})")
    with Store(run_dir / grid.STORE_FILE, readonly=True) as store:  # checked, then read; never written
        summary = _write_outputs(run_dir, store)
    print(report.print_table(summary))
    return 0


def cmd_export(args) -> int:
    from xdetox.export import export

    out = export(args.run_dir, args.setting, args.out, seed=args.seed, merge=not args.no_merge, dtype=args.dtype)
    print(f"wrote {out}")
    return 0


def cmd_score(args) -> int:
    """One line out per line in: the text's toxicity as %.6f, ``nan`` for a silent line (empty after
    normalisation, or punctuation and digits only: ``text.is_silent``), which no scorer scores.

    With ``--json``: ``{"toxicity": value or null, "flags": [...]}`` per line (``text.text_flags``;
    ``["silent"]`` for a silent line).
    """
    from xdetox.scorers import registry
    from xdetox.text import is_silent, read_lines, text_flags

    registry.check_languages(args.scorer, [args.lang])
    texts = read_lines(args.file, sys.stdin)
    scorer = registry.get_scorer(args.scorer)
    chunk = getattr(scorer, "batch_size", 256)
    for start in range(0, len(texts), chunk):
        part = texts[start:start + chunk]
        written = [t for t in part if not is_silent(t)]
        values = iter(scorer.score(written, args.lang) if written else [])
        for text in part:
            value = None if is_silent(text) else next(values)
            if args.json:
                flags = ["silent"] if value is None else text_flags(text, args.lang)
                print(json.dumps({"toxicity": None if value is None else round(value, 6), "flags": flags}))
            else:
                print("nan" if value is None else f"{value:.6f}")
        sys.stdout.flush()
    return 0


def cmd_scorer_eval(args) -> int:
    """paradetox test AUC, pairwise accuracy, held-out AUC, behavioural suite, ECE: per language."""
    from xdetox.scorers import registry
    from xdetox.scorers.offline.evaluate import format_auc_table

    registry.check_scorer(args.scorer)
    if registry.scorer_kind(args.scorer) != "toxicity":
        raise XdetoxInputError(f"{args.scorer} is not a toxicity scorer")
    results = registry.scorer_validation(args.scorer, compute=True)
    if args.json:
        print(json.dumps(results))
    else:
        print(format_auc_table(results))
    return 0


def cmd_scorer_check(args) -> int:
    from xdetox import scorer_checks
    from xdetox.scorers import registry

    langs = list(_langs(args.langs, "--langs"))
    registry.check_scorer(args.scorer)
    if registry.scorer_kind(args.scorer) != "toxicity":
        raise XdetoxInputError(f"{args.scorer} is not a toxicity scorer; the suite checks toxicity scorers")
    result = scorer_checks.run_checks(registry.get_scorer(args.scorer), langs=langs)
    print(json.dumps(result, ensure_ascii=False) if args.json else scorer_checks.format_checks(result).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
