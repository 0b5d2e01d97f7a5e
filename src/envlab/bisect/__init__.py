"""``envlab bisect``: name the package change (or the nightly) that broke one item of an env.

changes (what differs between two package sets, grouped so that coupled packages move together),
index (a simple index's files, hashes, metadata and nightly builds), search (the bisection over
anything that can be built and tested), candidate (an env of the good set plus some changes, built
aside with the layered builder), target (the one item run in each candidate), ends (the results
or dates bisected between), session (one bisect's steps as results and its record), packages and
nightly (the two kinds of bisect), commands (the entry points).
"""
