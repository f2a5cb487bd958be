"""The ``xdetox`` command: parse arguments, call the stages, print. No logic lives here.

Exit codes:

- 0: success;
- 2: bad input -- a flag, config, data file, model, store or text the command cannot use;
  one line on stderr (``xdetox: error: ...``), and nothing written: every check runs
  before a run directory or store is created, and an existing store is opened
  read-only until it is known to be an xdetox store;
- 3: a service the command needs is unavailable (Perspective), or the disk filled up during work (one line
  naming the path; a run resumes with the same command);
- 130: interrupted (Ctrl-C): one line on stderr; a run resumes with the same command;
- 1: anything else (a bug: the traceback is printed).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

import xdetox
from xdetox._io import quiet_libraries
from xdetox.data import parse_langs
from xdetox.errors import ServiceUnavailable, XdetoxInputError, no_space
from xdetox.grid import EvalOptions, GridConfig, RunOptions, load_config
from xdetox.grid.plan import describe_plan
from xdetox.grid.options import QUICK_OUT, QUICK_RUN, refuse_with_quick
from xdetox.grid.run import report_run, run_config
from xdetox.hygiene import TEXT_NORMALISATIONS
from xdetox.scorers.base import DEFAULT_TOXICITY_SCORER
from xdetox.specs import DTYPES


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit code 2."""

    def error(self, message: str):  # noqa: D401
        raise XdetoxInputError(message)


class _Given(argparse.Action):
    """Stores the flag's value and notes it in ``given``: ``--quick`` refuses the flags it sets, given beside it."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = getattr(namespace, "given", frozenset()) | {self.dest}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="xdetox", description="Cross-lingual detoxification by supervised fine-tuning.")
    parser.add_argument("--version", action="version", version=f"xdetox {xdetox.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="ZS vs X-FT toxicity on every target language")
    o = RunOptions  # the defaults of xdetox run's options, shared with xdetox.run(**options)
    run.add_argument("--quick", action="store_true",
                     help="a first run of minutes: " + " ".join(f"--{k} {v}" for k, v in QUICK_RUN.items())
                          + ", without the reference measures (test_neutral perplexity and embeddings), in"
                          f" {QUICK_OUT} unless --out; those four flags are refused beside it, every other flag applies")
    run.add_argument("--model", default=o.model, help=f"'{o.model}' (default), an HF model id or a local directory")
    run.add_argument("--data", default=o.data, help="JSONL/CSV/Parquet file, datasets directory or hub dataset id"
                                                   " with lang,toxic,neutral[,id,split] (default: bundled corpus)")
    run.add_argument("--source", default=o.source, help=f"language the adapter is trained on (default {o.source})")
    run.add_argument("--targets", default=o.targets, help="comma-separated target languages, or 'all' (default)",
                     action=_Given)
    run.add_argument("--split", default=o.split, help=f"train_toxic, test_toxic or test_neutral (default {o.split})")
    run.add_argument("--limit", type=int, default=o.limit, help="use only the first N prompts per target",
                     action=_Given)
    run.add_argument("--epochs", type=int, default=o.epochs, help=f"training epochs (default {o.epochs})",
                     action=_Given)
    run.add_argument("--seed", type=int, default=o.seed,
                     help=f"training and sampling seed (default {o.seed}); one seed: intervals cover sampling only")
    run.add_argument("--lr", type=float, default=o.lr, help=f"learning rate (default {o.lr:g})")
    run.add_argument("--lora-r", type=int, default=o.lora_r, help=f"LoRA rank (default {o.lora_r})")
    run.add_argument("--lora-alpha", type=int, default=o.lora_alpha, help=f"LoRA alpha (default {o.lora_alpha})")
    run.add_argument("--lora-dropout", type=float, default=o.lora_dropout,
                     help=f"LoRA dropout (default {o.lora_dropout:g})")
    run.add_argument("--train-batch-size", type=int, default=o.train_batch_size,
                     help=f"training sequences per step (default {o.train_batch_size})")
    run.add_argument("--sentences-per-sequence", type=int, default=o.sentences_per_sequence,
                     help="neutral sentences joined as running text per training sequence"
                          f" (default {o.sentences_per_sequence}; 1: the reference's one sentence)")
    run.add_argument("--text-normalisation", default=o.text_normalisation,
                     help=f"how training text and prompts are cleaned: {', '.join(TEXT_NORMALISATIONS)}"
                          f" (default {o.text_normalisation}; none: the data as shipped)")
    run.add_argument("--batch-size", type=int, default=o.batch_size,
                     help=f"generation batch size (default {o.batch_size})")
    run.add_argument("--max-new-tokens", type=int, default=o.max_new_tokens,
                     help=f"new tokens per completion (default {o.max_new_tokens})")
    run.add_argument("--temperature", type=float, default=o.temperature,
                     help=f"sampling temperature (default {o.temperature:g})")
    run.add_argument("--top-p", type=float, default=o.top_p, help=f"nucleus sampling top-p (default {o.top_p:g})")
    run.add_argument("--samples", type=int, default=o.samples, help=f"completions per prompt (default {o.samples})")
    run.add_argument("--dtype", default=o.dtype, help=f"{', '.join(DTYPES)} (default {o.dtype})")
    run.add_argument("--trust-remote-code", action="store_true",
                     help="let transformers run the model repository's own code (off by default)")
    run.add_argument("--scorer", default=o.scorer, action=_Given,
                     help=f"toxicity scorer (default {o.scorer}; see xdetox score --help for the others); "
                          "lang-fidelity is scored beside it")
    run.add_argument("--no-zs", action="store_true", help="skip the zero-shot baseline")
    run.add_argument("--out", default=None, help=f"run directory (default runs/<timestamp>; {QUICK_OUT} with --quick);"
                                                " an existing run resumes")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--reuse", action="append", default=[], metavar="RUN_DIR",
                     help="copy the work another run already did with the same content keys"
                          " (repeatable; default none)")

    ev_ = sub.add_parser("eval", help="measure a given model or adapter on every target's toxic prompts, untrained")
    for option in fields(EvalOptions):  # a flag per option: its help (type, action) is the option's
        ev_.add_argument("--" + option.name.replace("_", "-"), default=option.default, **option.metadata)
    ev_.add_argument("--out", default=None, help="run directory (default runs/<timestamp>); an existing eval resumes")

    grid = sub.add_parser("grid", help="the whole experiment grid from a TOML config")
    grid_sub = grid.add_subparsers(dest="grid_command", required=True, parser_class=_Parser)
    plan = grid_sub.add_parser("plan", help="list the training settings and count the evaluations")
    plan.add_argument("config", help="TOML config (see configs/)")
    grid_run = grid_sub.add_parser("run", help="run (or resume) every setting of a config")
    grid_run.add_argument("config", help="TOML config (see configs/)")
    grid_run.add_argument("--out", default=None, help="run directory (default runs/<config name>); resumes")
    grid_run.add_argument("--quiet", action="store_true", help="no progress bars")
    grid_run.add_argument("--reuse", action="append", default=[], metavar="RUN_DIR",
                          help="copy the work another run already did with the same content keys"
                               " (repeatable; default none)")
    grid_run.add_argument("--backend", choices=("local", "ray"), default="local",
                          help="local (default): this process; ray: one Ray task per training setting")
    grid_run.add_argument("--address", default=None,
                          help="with --backend ray: a running Ray cluster (host:port or auto);"
                               " default: start a local one")

    from xdetox.bench import BatchSizes as BenchBatchSizes  # torch-free

    bench = sub.add_parser("bench", help="generation speed vs the reference pattern; LoRA training speed")
    bench.add_argument("--prompts", type=int, default=64, help="prompts per generator (default 64)")
    bench.add_argument("--model", default="embedded",
                       help="'embedded' (default), an HF model id or a local directory")
    bench.add_argument("--lang", default="en", help="language of the prompts and training texts (default en)")
    bench.add_argument("--batch-size", action=BenchBatchSizes, default=16, metavar="N[,N...]",
                       help="xdetox generation batch size (default 16); several (8,16,32 or the flag repeated):"
                            " a sweep, tokens/s per size")
    bench.add_argument("--train-examples", type=int, default=300, help="examples in the timed LoRA epoch (default 300)")
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    bench.add_argument("--profile", action="store_true",
                       help="also profile xdetox's generator (torch.profiler): where the time goes")

    export = sub.add_parser("export", help="one tuned setting of a run as a standalone model + model card")
    export.add_argument("run_dir", help="a finished xdetox run directory")
    export.add_argument("--setting", required=True,
                        help="x-ft:<lang>, p-ft:<percent>%%, m-ft, dpo:<lang>, or eval (xdetox eval's adapter)")
    export.add_argument("--seed", type=int, default=None, help="which seed, when the run has several")
    export.add_argument("--out", required=True, help="new (or empty) directory to write the export into")
    export.add_argument("--no-merge", action="store_true", help="write the PEFT adapter instead of merged weights")
    export.add_argument("--dtype", default="bfloat16", help="merged weights: bfloat16 (default) or float32")
    export.add_argument("--push-to-hub", default=None, metavar="REPO",
                        help="then upload the export to this hub model repo (needs a token); offline: exit 3,"
                             " the local export stays")

    status = sub.add_parser("status", help="how far a run has got: each training setting's state, counts, time")
    status.add_argument("run_dir", help="a run directory, finished or not (read while its run writes it)")

    report = sub.add_parser("report", help="rebuild a run's report from its store")
    report.add_argument("run_dir")
    report.add_argument("--partial", action="store_true",
                        help="an unfinished run: report the settings it has finished, in RUN_DIR/partial/")

    score = sub.add_parser("score", help="score texts, one per line, with a toxicity scorer")
    score.add_argument("--scorer", default=DEFAULT_TOXICITY_SCORER,
                       help=f"{DEFAULT_TOXICITY_SCORER} (default), offline-semantic, offline (lexical, fast), "
                            "offline-lexical, perspective or hf:<model id or path>[#<label>]")
    score.add_argument("--lang", required=True, help="language of the texts, e.g. en")
    score.add_argument("file", help="one text per line ('-': stdin); a line empty after normalisation prints nan")
    score.add_argument("--json", action="store_true",
                       help='one JSON object per line: {"toxicity": value or null, "flags": [...]}')

    scorer = sub.add_parser("scorer", help="toxicity scorer tools")
    scorer_sub = scorer.add_subparsers(dest="scorer_command", required=True, parser_class=_Parser)
    ev = scorer_sub.add_parser("eval", help="a toxicity scorer's validation figures per language (cached)")
    ev.add_argument("--scorer", default=DEFAULT_TOXICITY_SCORER,
                    help=f"any toxicity scorer (default {DEFAULT_TOXICITY_SCORER})")
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check = scorer_sub.add_parser("check", help="the behavioural suite: accuracy per language and functionality")
    check.add_argument("--scorer", default=DEFAULT_TOXICITY_SCORER,
                    help=f"any toxicity scorer (default {DEFAULT_TOXICITY_SCORER})")
    check.add_argument("--langs", default="all", help="comma-separated languages, or 'all' (default)")
    check.add_argument("--json", action="store_true", help="print JSON instead of tables")
    train_scorer = scorer_sub.add_parser(
        "train", help="train the offline-tuned scorer's adapter, unit and calibration into DIR (what ships in the package)")
    train_scorer.add_argument("--out", required=True, help="directory to write (new, or an earlier offline-tuned scorer's)")
    train_scorer.add_argument("--seed", type=int, default=0, help="training seed (default 0: the shipped model's)")
    train_scorer.add_argument("--no-validate", action="store_true",
                              help="skip the validation figures (validation.json; minutes)")
    compare = sub.add_parser("compare", help="finished runs' cells side by side, with paired differences")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN", help="finished run directories (at least 2)")
    compare_format = compare.add_mutually_exclusive_group()
    compare_format.add_argument("--csv", action="store_true", help="print the whole table as CSV")
    compare_format.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    compare.set_defaults(handler=cmd_compare)
    for command, handler in ((run, cmd_run), (plan, cmd_grid_plan), (grid_run, cmd_grid_run), (bench, cmd_bench),
                             (export, cmd_export), (report, cmd_report), (status, cmd_status), (score, cmd_score),
                             (ev, cmd_scorer_eval), (check, cmd_scorer_check), (train_scorer, cmd_scorer_train)):
        command.set_defaults(handler=handler)
    ev_.set_defaults(handler=cmd_eval)
    for command in (run, grid_run, bench, export, report, score, ev, check, train_scorer):  # the commands that run models
        command.add_argument("--threads", default=None, metavar="N|auto",
                             help="torch threads: a number, or 'auto' (the cores free at the start; idle threads"
                                  " sleep when sharing the machine). Default: $XDETOX_THREADS, else torch's")
    for name in ("--quiet", "--reuse", "--threads"):  # as xdetox run has them (argparse's parents share actions so)
        ev_._add_action(next(a for a in run._actions if name in a.option_strings))
    return parser


def _apply_threads(args) -> None:
    """``--threads`` (or ``$XDETOX_THREADS``), before any model library is imported."""
    import os

    from xdetox.machine import ThreadSetting, apply_threads, choose_threads

    value = getattr(args, "threads", None) or os.environ.get("XDETOX_THREADS")
    if value:
        apply_threads(choose_threads(ThreadSetting.parse(value)))


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        args = build_parser().parse_args(argv)
        _apply_threads(args)
        quiet_libraries()
        return args.handler(args)
    except XdetoxInputError as err:
        print(f"xdetox: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a service unavailable, or a full disk: exit 3; anything else is a bug (traceback)
        line = str(err) if isinstance(err, ServiceUnavailable) else no_space(err)
        if line is None:
            raise
        running = args.command in ("run", "eval") or (args.command == "grid" and args.grid_command == "run")
        resume = "; the run is resumable: run the same command again" if running else ""
        print(f"xdetox: error: {line}{resume}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("xdetox: interrupted", file=sys.stderr)
        return 130


def _run_options(args) -> RunOptions:
    """``xdetox run``'s flags as ``RunOptions``; with --quick, a flag it sets given beside it is refused."""
    if args.quick:
        refuse_with_quick(getattr(args, "given", ()))
    return RunOptions(**{f.name: getattr(args, f.name) for f in fields(RunOptions)})


def _config_from_args(args) -> GridConfig:
    """``xdetox run``'s flags as its grid (``RunOptions``): ZS + X-FT from --source on the --targets."""
    return _run_options(args).to_config()


def _print_finished(finished) -> int:
    from xdetox import report

    print(report.print_table(finished.summary))
    print(f"\nwrote {finished.run_dir}/summary.json and the report, {finished.run_dir / report.REPORT_HTML}"
          f" ({finished.elapsed_s:.0f} s)")
    return 0


def cmd_run(args) -> int:
    options = _run_options(args)
    out = args.out if args.out is not None else options.default_out()
    return _print_finished(run_config(options.to_config(), out, quiet=args.quiet, reuse=args.reuse))


def cmd_eval(args) -> int:
    options = EvalOptions(**{f.name: getattr(args, f.name) for f in fields(EvalOptions)})
    return _print_finished(run_config(options.to_config(), args.out, quiet=args.quiet, reuse=args.reuse))


def cmd_grid_plan(args) -> int:
    print(describe_plan(load_config(args.config)))
    return 0


def cmd_status(args) -> int:
    from xdetox.grid.status import run_status

    print(run_status(args.run_dir).to_text())
    return 0


def cmd_grid_run(args) -> int:
    config = load_config(args.config)
    out = args.out if args.out is not None else str(Path("runs") / config.name)
    if args.address is not None and args.backend != "ray":
        raise XdetoxInputError("--address needs --backend ray")
    return _print_finished(run_config(config, out, quiet=args.quiet, backend=args.backend, address=args.address,
                                      reuse=args.reuse))


def cmd_bench(args) -> int:
    from xdetox import bench

    spec = bench.BenchSpec(model=args.model, prompts=args.prompts, lang=args.lang, batch_size=args.batch_size,
                           profile=args.profile,
                           train_examples=args.train_examples)
    result = bench.run(spec, progress=lambda line: print(line, file=sys.stderr))
    print(json.dumps(result, indent=2) if args.json else bench.format_table(result))
    return 0


def cmd_report(args) -> int:
    from xdetox import report

    print(report.print_table(report_run(args.run_dir, partial=args.partial)))
    return 0


def cmd_export(args) -> int:
    from xdetox.export import export

    out = export(args.run_dir, args.setting, args.out, seed=args.seed, merge=not args.no_merge, dtype=args.dtype,
                 push_to_hub=args.push_to_hub)
    print(f"wrote {out}" + (f" and pushed it to {args.push_to_hub}" if args.push_to_hub else ""))
    return 0


def cmd_compare(args) -> int:
    from xdetox.compare import compare_runs

    result = compare_runs(args.run_dirs)
    sys.stdout.write(result.to_csv() if args.csv else result.to_markdown() if args.markdown
                     else result.to_text() + "\n")
    return 0


def cmd_score(args) -> int:
    """One line out per line in: the text's toxicity as %.6f, ``nan`` for a silent line (empty after
    normalisation, or punctuation and digits only: ``text.is_silent``), which no scorer scores.

    With ``--json``: ``{"toxicity": value or null, "flags": [...]}`` per line (``text.text_flags``;
    ``["silent"]`` for a silent line).
    """
    from xdetox.scorers import registry, score_in_chunks
    from xdetox.text import read_lines, text_flags

    registry.check_languages(args.scorer, [args.lang])
    texts = read_lines(args.file, sys.stdin)
    for chunk in score_in_chunks(registry.get_scorer(args.scorer), texts, args.lang):
        for text, value in chunk:
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
    from xdetox.scorers.offline.evaluate import format_validation

    registry.check_scorer(args.scorer)
    if registry.scorer_kind(args.scorer) != "toxicity":
        raise XdetoxInputError(f"{args.scorer} is not a toxicity scorer")
    results = registry.scorer_validation(args.scorer, compute=True)
    print(json.dumps(results) if args.json else format_validation(results))
    return 0


def cmd_scorer_train(args) -> int:
    """Train the offline-tuned scorer into ``--out`` (seeded); its identity is the files' hash."""
    from xdetox.scorers import tuned, tuned_train

    config = tuned.TunedScorerConfig(seed=args.seed)
    scorer = tuned_train.train(Path(args.out), config, progress=True, validate=not args.no_validate)
    print(f"{args.out}: {scorer.identity}")
    return 0


def cmd_scorer_check(args) -> int:
    from xdetox import scorer_checks
    from xdetox.scorers import registry

    langs = list(parse_langs(args.langs, "--langs"))
    registry.check_scorer(args.scorer)
    if registry.scorer_kind(args.scorer) != "toxicity":
        raise XdetoxInputError(f"{args.scorer} is not a toxicity scorer; the suite checks toxicity scorers")
    result = scorer_checks.run_checks(registry.get_scorer(args.scorer), langs=langs)
    print(json.dumps(result, ensure_ascii=False) if args.json else scorer_checks.format_checks(result).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
