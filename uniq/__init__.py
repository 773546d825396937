"""uniq-bench: the shared machinery and the UNIQ method.

Importing the package first keeps numpy's SIMD dispatch portable (uniq/numerics.py): it
must happen before numpy loads, and every process the suite starts imports ``uniq`` first.
"""

from uniq.numerics import pin_numpy

pin_numpy()
