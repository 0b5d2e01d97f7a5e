"""Envspecs: the matrix as declared (env specs, the shared stack, named indexes, platforms).

Owns parsing and validation of `envspecs/`; `catalog` is the stdlib-only view the noxfile reads
before envlab is installed. Imports only the base modules.
"""
