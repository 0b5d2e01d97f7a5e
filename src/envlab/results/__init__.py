"""Results: the versioned result document, the `reports/runs` store, the SQLite history index and
CSV exports. Everything a run leaves behind, read back validated. Imports only the base modules.
"""
