"""The ``offline`` scorer and everything it is built from.

Rooms, read top to bottom:

* ``config``: ``OfflineScorerConfig`` (what it is trained on, and how; ``key()`` names the cache
  file and the model's identity), ``LEXICAL_V1`` (the first model, the ``offline-lexical`` scorer)
  and ``data_digest``;
* ``deobfuscate``: spread-out, leet, look-alike and stretched spellings undone;
* ``data``: the labelled texts: ``model_input``, ``paradetox_rows``, ``toxicity_corpus``,
  ``split_heldout``, ``augmentation_rows`` (the written augmentation, used by ``offline-semantic``;
  ``augment_weight`` > 0 adds it here too), ``training_set``;
* ``model``: the scikit-learn pipeline (``CompactTfidfVectorizer``, ``NBScaler``, ``build_pipeline``);
  the only room that imports scikit-learn at import time;
* ``scorer``: ``OfflineScorer``: train, cache (``load``) and score;
* ``evaluate``: ``evaluate_offline`` (ROC-AUC per language) and ``format_auc_table``.

The built-in ``"offline"`` scorer needs nothing but the bundled data: one multilingual,
purely lexical model, trained once on this machine and cached.

* Input: ``normalize(text)`` (NFKC, lower-case, one space, no space before punctuation,
  re-joined "don 't"/"it 's"-style splits, apostrophes inside words dropped, letter runs
  cut to three), then the first ``max_chars`` characters.  The same function runs at
  training and at scoring time, which removes the en/ru casing and tokenisation artefact
  of the paradetox-derived data (toxic side lower-cased and tokenised, neutral side not).
  Then ``deobfuscate`` (``OfflineScorerConfig.deobfuscate``, on by default; off in
  ``LEXICAL_V1``): ``f u c k``, ``i.d.i.o.t``, ``1d10t``, ``cвoлoчь`` (Latin look-alikes in a
  Cyrillic word), ``غـبـي`` (tatweel), ``idiooooot`` are read as the plain word.  On the
  behavioural suite's obfuscated insults this lifts accuracy from 0.12-0.42 to 0.30-0.74 per
  language; every AUC and accuracy below moves by at most 0.01 (``xdetox scorer eval``).
* Features: TF-IDF of character n-grams inside word boundaries (``char_wb`` 1-5,
  sublinear tf, min_df 2), each column scaled by its naive-Bayes log-count ratio
  (NB-LR, Wang & Manning 2012), then an L2 logistic regression (liblinear).
* Data: the paradetox TRAIN split of all 9 languages (toxic = 1, neutral = 0, each row
  weighted ``paradetox_weight``), plus the bundled toxicity corpus
  (``resources/toxicity``, 8 languages, no uk) minus its held-out part, re-weighted so that
  every language's corpus rows weigh ``lang_weight`` in total (en and zh have 4x the rows
  of de or es).  The paradetox TEST split is never used for training; corpus texts equal
  (after normalisation) to any paradetox sentence are dropped, as are corpus texts seen
  with both labels.
* Held-out: a corpus text is held out when the hash of its normalised (and cut) text
  falls below ``heldout_fraction``, so the choice is deterministic and duplicate texts
  always land on the same side.
* ``lang`` is not a feature: a completion that drifts into another language is scored
  by the same model.

Measured on the bundled data with ``LEXICAL_V1`` (2-core CPU machine, Python 3,
scikit-learn 1.9.1; the default config, which adds ``deobfuscate``, trains in about 50 s with
the other core busy and moves each AUC below by at most 0.002): training 34 s (42 s wall for the whole process, peak RSS 1.2 GB),
cache file 18 MB, cached ``load()`` 1.2 s in-process (1.5 s for a fresh interpreter),
scoring 10,000 short texts 0.24 s.  ROC-AUC (``evaluate_offline``):

    lang  paradetox_test  heldout
    en             0.974    0.977
    es             0.927    0.927
    de             0.905    0.826
    zh             0.954    0.928
    ar             0.937    0.900
    hi             0.977    0.952
    uk             0.978        –
    ru             0.981    0.966
    am             0.909    0.851
    mean           0.949    0.916

The target of 0.95 in every language is NOT reached: es, de, ar and am stay at
0.90-0.94.  About twenty variants were measured (plain LR vs NB-LR,
C 1-30, paradetox weight 5-50, per-language balancing, char 2-6 n-grams, word 1-2-grams,
their unions and score averages, per-language feature copies, extra paradetox
pair-difference rows); none lifted the worst
language above ~0.92 on paradetox test without costing held-out AUC.  Those variants were
compared on the paradetox test split and the held-out part themselves, so the numbers
above are slightly optimistic.  The remaining errors are mostly insults the model never
saw ("kotz", "pisser", "zurückgebliebene", Amharic slurs) and neutral rewrites that stay
rude without a swear word.

Known blind spots (it is a bag of character n-grams):

* sarcasm, irony, threats or implicit hate phrased in polite words; dog whistles
  ("Immigrants should all go back where they came from." scores 0.27);
* negation and quotation ("he is not an idiot", "calling someone an idiot is wrong"
  score 1.00);
* topic bias: texts about migrants, religion, Ethiopian politics or race (zh COLD) lean
  toxic because the corpora are collected around those topics; in es and ar the source
  and the label are entangled (tweets vs Wikipedia/news comments), so style also leaks;
* code-mixed or romanised Hindi ("tu pagal hai kamine" 0.51, in Devanagari 1.00), Arabizi, transliterated Amharic: the
  training data is Devanagari/Arabic/Ge'ez script;
* uk has no corpus data, only 300 paradetox train pairs (it borrows from ru);
* obfuscations beyond what ``deobfuscate`` undoes (masked ``id*ot``, dropped letters,
  romanised or transliterated insults such as ``ya 7mar``), and very long texts (only the first
  ``max_chars`` characters are read);
* scores are roughly calibrated only in the sense that every training source is 50/50
  toxic; compare scores within a language rather than across languages.

Licence note: the cached model is derived from the bundled toxicity corpus, parts of
which are research-only (see ``resources/toxicity/README.md``); do not redistribute the
cache file.
"""
