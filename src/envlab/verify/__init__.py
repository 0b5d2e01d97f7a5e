"""Verification: the probe run inside an env, the GPU-arch rule, and the expectation checks that say
whether what got installed is the build that was asked for. Imports spec, results and the base.
"""
