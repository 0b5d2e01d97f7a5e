"""Envspecs: the matrix as declared (env specs, the shared stack, named indexes, platforms).

Owns parsing and validation of `envspecs/`; `catalog` is the stdlib-only view the noxfile reads
before envlab is installed, with `factors` (stdlib-only too) expanding a factored envspec into its
cells for both; `releases` holds what PyTorch publishes, to mark cells that cannot exist.
Imports only the base modules.
"""
