"""Building envs: interpreters, the uv seam, layered venv builds, conda bases, per-platform locks.

Turns a spec into an env on disk (or a lockfile); never decides whether the env is *right*:
that is `verify`. Imports spec, results and the base.
"""
