"""Reports over the results history: HTML/Markdown pages, plots and regression verdicts.
Imports results, run (statistics) and the base; nothing below imports it.
"""
