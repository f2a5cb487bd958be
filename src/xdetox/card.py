"""The model card (``README.md``) of an export, ready for the Hugging Face hub.

The metadata is built with ``huggingface_hub``'s ``ModelCardData`` and ``EvalResult``, so the hub reads it as it
reads its own cards:

- ``model-index``: per target language (and prompt set), the tuned model's mean toxicity and its reduction
  against ZS (``mean_toxicity`` and ``reduction_abs`` of the setting's entry in ``summary.json``, verbatim);
- ``library_name`` ``peft`` for an adapter export, ``transformers`` for merged weights; ``pipeline_tag``
  ``text-generation``; ``base_model`` (the base's hub id; none for a local directory);
- ``datasets``: the run's data, the bundled corpus's hub id (``DATA_ID``); a run on the user's own ``--data``
  file has no hub id, so ``datasets`` is left out and the model-index names the file;
- ``license``/``license_link`` of the base where xdetox knows it (the embedded Gemma: ``gemma``), else none;
- ``language`` (the nine languages), ``tags``.

The text says how the numbers were computed (scorer, n, seeds, the abstention flags), the recipe, the limits,
the licences and the reference paper's citation. Every number comes from ``summary.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

from xdetox.data import LANGS
from xdetox.report.results import ABSTENTION_POINTS
from xdetox.specs import EMBEDDED, EMBEDDED_NAME, PARADIGM_LABELS, ModelSpec

EMBEDDED_HUB_ID = "google/gemma-3-270m"
EMBEDDED_LICENSE = ("gemma", "https://ai.google.dev/gemma/terms")  # license, license_link of the embedded model
DATA_ID = "textdetox/multilingual_paradetox"
DATA_LICENCE = "OpenRAIL++"
TAGS = ("xdetox", "detoxification", "cross-lingual", "lora")
PIPELINE_TAG = "text-generation"
TASK = ("text-generation", "Detoxification: completions of toxic prompts")  # model-index task type, name
PAPER = "Breaking mBad! Supervised Fine-tuning for Cross-Lingual Detoxification"
CITATION = """@misc{beniwal2025breakingmbad,
  title = {Breaking mBad! Supervised Fine-tuning for Cross-Lingual Detoxification},
  author = {Beniwal, Himanshu and Kim, Youngwoo and Sap, Maarten and Dan, Soham and Hartvigsen, Thomas},
  year = {2025},
  eprint = {2505.16722},
  archivePrefix = {arXiv},
  url = {https://arxiv.org/abs/2505.16722}
}"""
METRICS = (  # (summary field, model-index metric type, metric name)
    ("mean_toxicity", "toxicity", "mean toxicity"),
    ("reduction_abs", "toxicity_reduction", "toxicity reduction vs ZS (ZS − tuned)"),
)


def base_model_id(spec: ModelSpec) -> str | None:
    """The Hub id of the base model (None for a local directory)."""
    if spec.name == EMBEDDED:
        return EMBEDDED_HUB_ID
    return None if Path(os.path.expanduser(spec.name)).exists() else spec.name


def data_source(config: dict) -> tuple[str | None, str]:
    """(hub id, name) of the run's data: the bundled corpus's hub id, or (None, the file's name) for the
    user's own ``--data`` file, which has no hub id."""
    path = config.get("data_path")
    return (None, Path(path).name) if path else (DATA_ID, DATA_ID.split("/")[-1])


# --------------------------------------------------------------------------- the numbers


def _number(value, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _interval(value, ci) -> str:
    if value is None:
        return "–"
    bounds = f" [{_number(ci[0], signed=True)}, {_number(ci[1], signed=True)}]" if ci else ""
    return _number(value, signed=True) + bounds


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def setting_entries(summary: dict, row: dict) -> tuple[list[dict], dict]:
    """The summary's entries of the setting and the ZS entries by (target, split)."""
    source = row["source"] if isinstance(row["source"], str) else None
    percent = None if row["percent"] is None or row["percent"] != row["percent"] else int(row["percent"])

    def same_model(e: dict) -> bool:
        return e["model"] == row["model"]

    tuned = [e for e in summary["settings"] if same_model(e) and e["paradigm"] == row["paradigm"]
             and e["source"] == source and e["percent"] == percent]
    zs = {(e["target"], e["split"]): e for e in summary["settings"] if same_model(e) and e["paradigm"] == "zs"}
    return tuned, zs


def eval_results(summary: dict, tuned: list[dict], config: dict) -> list:
    """The model-index entries: per target and prompt set, the tuned model's mean toxicity and its reduction
    against ZS, the summary's values verbatim (a value the summary lacks is left out)."""
    from huggingface_hub import EvalResult

    hub_id, name = data_source(config)
    results = []
    for e in tuned:
        for field, metric, label in METRICS:
            if e.get(field) is None:
                continue
            results.append(EvalResult(
                task_type=TASK[0], task_name=TASK[1], dataset_type=hub_id or name,
                dataset_name=f"{name if hub_id else 'user data ' + name} ({e['target']}, {e['split']} prompts)",
                dataset_config=e["target"], dataset_split=e["split"], metric_type=metric,
                metric_name=f"{label}, scorer {summary['scorer']}", metric_config=summary["scorer"],
                metric_value=e[field]))
    return results


def card_data(summary: dict, row: dict, spec: ModelSpec, config: dict, merge: bool):
    """The card's metadata as ``huggingface_hub.ModelCardData``."""
    from huggingface_hub import ModelCardData

    tuned, _ = setting_entries(summary, row)
    hub_id, _ = data_source(config)
    license_, link = EMBEDDED_LICENSE if spec.name == EMBEDDED else (None, None)
    results = eval_results(summary, tuned, config)
    return ModelCardData(
        language=list(LANGS), license=license_, license_link=link, library_name="transformers" if merge else "peft",
        pipeline_tag=PIPELINE_TAG, base_model=base_model_id(spec), datasets=[hub_id] if hub_id else None,
        tags=[*TAGS, *([] if merge else ["peft"])], model_name=card_title(spec, row) if results else None,
        eval_results=results or None,
    )


def card_title(spec: ModelSpec, row: dict) -> str:
    done = "with a given adapter, measured" if row["paradigm"] == "eval" else "detoxified"
    return f"{spec.display_name}, {done} ({row['label']}, seed {row['seed']})"


# --------------------------------------------------------------------------- the text


def results_table(tuned: list[dict], zs: dict) -> list[str]:
    lines = [
        "| target | split | ZS toxicity | tuned toxicity | reduction [95 % CI] | p | length-matched [95 % CI]"
        " | empty ZS → tuned | ppl ref change | language fidelity |",
        "|---|---|---:|---:|---|---:|---|---:|---:|---:|",
    ]
    for e in tuned:
        base = zs.get((e["target"], e["split"]), {})
        cells = [
            e["target"], e["split"], _number(base.get("mean_toxicity")), _number(e["mean_toxicity"]),
            _interval(e["reduction_abs"], e.get("ci95")), _number(e.get("p_value")),
            _interval(e.get("reduction_length_matched"), e.get("reduction_length_matched_ci")),
            f"{_percent(base.get('empty_share'))} → {_percent(e.get('empty_share'))}",
            _number(e.get("ppl_ref_change"), signed=True), _number(e.get("lang_fidelity")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _validation_table(figures: dict) -> list[str]:
    names = list(figures)
    langs = [lang for lang in LANGS if any(lang in figures[n] for n in names)]
    lines = ["| lang | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += ["| " + " | ".join([lang] + [_number(figures[n].get(lang)) for n in names]) + " |" for lang in langs]
    return lines


def _use(spec: ModelSpec, config: dict, merge: bool, seq2seq: bool) -> list[str]:
    auto = "AutoModelForSeq2SeqLM" if seq2seq else "AutoModelForCausalLM"
    lines = ["## Use", "", "```python"]
    if merge:
        lines += [f"from transformers import {auto}, AutoTokenizer",
                  f"model = {auto}.from_pretrained(\"PATH\")", "tokenizer = AutoTokenizer.from_pretrained(\"PATH\")"]
    else:
        lines += ["from peft import PeftModel", f"from transformers import {auto}, AutoTokenizer",
                  f"model = PeftModel.from_pretrained({auto}.from_pretrained(\"BASE\"), \"PATH\")",
                  "tokenizer = AutoTokenizer.from_pretrained(\"PATH\")"]
    decode = config["decode"]
    return lines + ["```", "",
                    "The merged weights (LoRA merged into the base, `merge_and_unload`)." if merge else
                    f"A PEFT LoRA adapter; BASE is `{base_model_id(spec) or spec.name}`"
                    + (" (the run used its dequantised GGUF Q4_K_M copy)." if spec.name == EMBEDDED else "."),
                    f"The run sampled with the prompt template `{decode['template']}`, temperature"
                    f" {decode['temperature']}, top-p {decode['top_p']}, {decode['max_new_tokens']} new tokens"
                    + (" (in `generation_config.json`)." if merge else "."), ""]


def _results(summary: dict, tuned: list[dict], zs: dict, row: dict, seeds: list) -> list[str]:
    one_seed = all(e.get("ci_unit") == "prompts" for e in tuned) and tuned
    return ["## Results", "",
            f"Measured by the run (`summary.json`), scorer `{summary['scorer']}`; mean toxicity of the"
            " completions of toxic prompts that are text (an empty or silent completion is never scored), ZS = the"
            " base model. Reduction = ZS − tuned over the prompts where both wrote text, with its 95 % CI and p from"
            " the seed-level test (seeds and prompts as random effects"
            + ("; with one seed the interval covers the prompts' sampling variance only" if one_seed else "")
            + "); length-matched = both completions cut to the shorter one; ppl ref change = relative change of"
            " the perplexity of the target's neutral reference sentences."
            + (f" Means over seeds {', '.join(map(str, seeds))}; this export is seed {row['seed']}."
               if len(seeds) > 1 else "")
            + " The same mean toxicity and reduction per target are this card's `model-index`.", "",
            *results_table(tuned, zs), ""]


def _training(train: dict, config: dict, label: str, paradigm: str) -> list[str]:
    lora = train["lora"]
    what = {"x-ft": f"the {train['source']} train pairs", "dpo": f"the {train['source']} train pairs",
            "p-ft": f"{train['percent']} % of the train pairs of {', '.join(train['pool'])}",
            "m-ft": f"all train pairs of {', '.join(train['pool'])}"}.get(train["paradigm"], "-")
    data = config.get("data_path") or f"{DATA_ID} (bundled with xdetox)"
    return ["## Training", "",
            f"- paradigm: {paradigm} (`{label}`), objective `{train['objective']}`",
            f"- data: {what} of {data}",
            f"- epochs {train['epochs']}, batch size {train['batch_size']} (gradient accumulation"
            f" {train['gradient_accumulation_steps']}), learning rate {train['learning_rate']},"
            f" max length {train['max_length']}, seed {train['seed']}",
            f"- LoRA r = {lora['r']}, alpha = {lora['alpha']}, dropout = {lora['dropout']},"
            f" target modules {', '.join(lora['target_modules'])}", ""]


def _limits_and_licences(summary: dict, tuned: list[dict], seeds: list, spec: ModelSpec, config: dict) -> list[str]:
    ns = sorted({e["n"] for e in tuned})
    flagged = [e["target"] for e in tuned if e.get("abstention_flag")]
    switched = [e["target"] for e in tuned if e.get("language_flag")]
    points = f"{100 * ABSTENTION_POINTS:.0f} points"
    hub_id, name = data_source(config)
    data = (f"{DATA_ID} (TextDetox 2024; Dementieva et al.), {DATA_LICENCE}." if hub_id else
            f"the run's own data file `{name}`; its licence is its owner's.")
    base = "Gemma Terms of Use (https://ai.google.dev/gemma/terms)" if spec.name == EMBEDDED else "see the base model"
    return ["## Limits", "",
            f"- n = {', '.join(map(str, ns)) or '–'} prompts per target language; seeds: {', '.join(map(str, seeds))}.",
            f"- One automatic toxicity scorer (`{summary['scorer']}`); its errors are the numbers' errors.",
            "- Abstention: " + (f"the empty, silent or degenerate share differs from ZS's by more than {points} in"
                                f" {', '.join(flagged)}: the reduction there partly measures how often the model writes"
                                " nothing of substance (in either direction), not only how toxic its text is."
                                if flagged else
                                f"no target's empty, silent or degenerate share differs from ZS's by more than {points}."),
            "- Language: " + (f"the share written in another script (or language) differs from ZS's by more than"
                              f" {points} in {', '.join(switched)}: the reduction there partly measures a change of"
                              " language, which a toxicity scorer can read as a change of toxicity."
                              if switched else
                              f"no target's share written in another script differs from ZS's by more than {points}."),
            "- Lower measured toxicity is not safety: the model can still write harmful text.", "",
            "## Licences", "", f"- Base model: {base}.", f"- Training data: {data}", ""]


def model_card(summary: dict, row: dict, train: dict, spec: ModelSpec, config: dict,
               merge: bool, seq2seq: bool) -> str:
    """The export's README.md: the hub metadata (``card_data``), then use, results, training, scorer, limits,
    licences and citation."""
    from huggingface_hub import ModelCard

    tuned, zs = setting_entries(summary, row)
    label = row["label"]
    paradigm = PARADIGM_LABELS.get(train["paradigm"], train["paradigm"])
    given = train.get("given")
    lines = [f"# {card_title(spec, row)}", "",
             f"The base model **{spec.display_name}** fine-tuned with LoRA by [xdetox](https://pypi.org/project/xdetox/)"
             f" ({paradigm}) to write less toxic completions, following the protocol of *{PAPER}*"
             " (Beniwal et al., 2025)." if given is None else
             f"The base model **{spec.display_name}** with a LoRA adapter that xdetox did not train: `xdetox eval`"
             f" measured it on the protocol of *{PAPER}* (Beniwal et al., 2025)."]
    if spec.name == EMBEDDED:
        lines.append(f"The base is the dequantised GGUF copy \"{EMBEDDED_NAME}\", not Google's bf16 checkpoint.")
    seeds = tuned[0]["seeds"] if tuned else [row["seed"]]
    lines += ["", *_use(spec, config, merge, seq2seq), *_results(summary, tuned, zs, row, seeds),
              *(_training(train, config, label, paradigm) if given is None else
                ["## Origin", "", f"- the PEFT adapter `{given['adapter']}` (weights sha256 {given['adapter_sha256']}),"
                 " given to `xdetox eval`; xdetox did not train it, so its recipe is its maker's", ""])]
    figures = summary["run"].get("scorer_validation")
    lines += ["## Scorer", "", f"Toxicity is scored by xdetox's `{summary['scorer']}` scorer."]
    if figures:
        lines += ["Its validation figures (ROC-AUC, accuracy, calibration error) per language:", ""]
        lines += _validation_table(figures)
    lines.append("")
    lines += _limits_and_licences(summary, tuned, seeds, spec, config)
    lines += ["## Citation", "", "```bibtex", CITATION, "```", ""]
    data = card_data(summary, row, spec, config, merge)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))
