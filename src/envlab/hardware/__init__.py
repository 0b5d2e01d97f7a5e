"""This machine: GPU/driver/CPU detection from recorded or live tool output, the knowledge tables,
and the doctor that says which envs run here. Imports verify (the arch rule), spec, results, base.
"""
