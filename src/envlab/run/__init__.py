"""Running things inside an env: the compat suite, the benchmarks, their statistics and the device
peaks they are measured against. Imports spec, results and the base.
"""
