"""Engines run the compiled signal queries.

An engine turns a model and an as-of time into per-account results that the
store can read. The contract every engine keeps:

- ``scores(model, as_of)`` is a context manager yielding a parenthesised
  query that the store's DuckDB connection can select from while the block
  runs. Its columns are those of ``compile_scoring_query``: ``account_id``,
  the signal columns, the ``points__*`` columns and ``score``. The Spark
  engine's query reads an Arrow table that it registers on the connection.
- It reads events at or before ``as_of`` only, and returns one row per account.
- Results are identical across engines for the same events and model; the
  shared engine tests check this.

The DuckDB engine (``engines.duckdb``) runs in the store; the Spark engine
(``engines.spark``, needs pyspark) reads events from Parquet or a Spark table,
and ``engines.factory.open_engine`` opens either by name.
"""

from upsignal.signals.engines.duckdb import DuckDBEngine

__all__ = ["DuckDBEngine"]
