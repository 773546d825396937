"""Environments, demonstrators and rollouts.

``import uniq`` first: it pins numpy's SIMD dispatch before numpy loads (uniq/numerics.py),
so a process that starts from ``envs`` rolls out the same bytes as one that starts from the CLI.
"""

import uniq  # noqa: F401
