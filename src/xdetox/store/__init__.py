"""The run database (``Store``): one SQLite file per run directory.

``database`` opens it and writes (``Store``), ``reads`` holds its queries (``StoreReads``),
``schema`` its tables and ``file`` the checks of the file itself. No SQL runs outside this package.
"""

from xdetox.store.database import ATTEMPT_OUTCOMES, Store
from xdetox.store.schema import DATA_TABLES, REQUIRED_TABLES, SCHEMA_VERSION

__all__ = ["ATTEMPT_OUTCOMES", "DATA_TABLES", "REQUIRED_TABLES", "SCHEMA_VERSION", "Store"]
