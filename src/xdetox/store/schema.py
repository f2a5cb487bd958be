"""The store's tables: the SQL that creates them and the names the rest of ``xdetox.store`` uses."""

SCHEMA_VERSION = 1  # meta "schema": a store written by a newer xdetox is refused, not misread

# The tables that hold results (``meta`` holds bookkeeping: config, wall time, environment).
DATA_TABLES: tuple[str, ...] = ("train_settings", "evaluations", "batches", "completions", "scores", "measures")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS train_settings (
    key TEXT PRIMARY KEY, label TEXT NOT NULL, model TEXT NOT NULL, paradigm TEXT NOT NULL,
    source TEXT, percent INTEGER, seed INTEGER NOT NULL, spec TEXT NOT NULL,
    adapter_path TEXT, adapter_sha256 TEXT, status TEXT NOT NULL DEFAULT 'pending');
CREATE TABLE IF NOT EXISTS evaluations (
    key TEXT PRIMARY KEY, train_key TEXT NOT NULL, target TEXT NOT NULL, split TEXT NOT NULL,
    decode TEXT NOT NULL, n_batches INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    eval_key TEXT NOT NULL, batch INTEGER NOT NULL, PRIMARY KEY (eval_key, batch));
CREATE TABLE IF NOT EXISTS completions (
    eval_key TEXT NOT NULL, prompt_id TEXT NOT NULL, sample INTEGER NOT NULL,
    prompt TEXT NOT NULL, text TEXT NOT NULL, n_tokens INTEGER NOT NULL,
    PRIMARY KEY (eval_key, prompt_id, sample));
CREATE TABLE IF NOT EXISTS scores (
    eval_key TEXT NOT NULL, prompt_id TEXT NOT NULL, sample INTEGER NOT NULL,
    scorer TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (eval_key, prompt_id, sample, scorer));
CREATE TABLE IF NOT EXISTS measures (
    train_key TEXT NOT NULL, lang TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (train_key, lang, name));
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY, started TEXT NOT NULL, start_s REAL NOT NULL, last_s REAL NOT NULL,
    end_s REAL, outcome TEXT NOT NULL DEFAULT 'running');
"""
REQUIRED_TABLES: tuple[str, ...] = ("meta", *DATA_TABLES)  # ``attempts`` is added to older stores on write
