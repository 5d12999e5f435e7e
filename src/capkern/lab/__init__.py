"""The policy lab: ``capkern sim`` and ``capkern lab`` on the real kernel.

* :mod:`.sim` -- drive one reference string through a booted kernel, pager and sealer;
* :mod:`.workloads` -- textbook strings and seeded synthetic workloads;
* :mod:`.sweep` -- workloads x policies x frame counts, tables, CSV/JSON, plots, Dask;
* :mod:`.reference` -- plain in-memory simulators, the benchmark baseline.
"""

from ._sim import SimResult, Step, run_sim, simulate
from ._workloads import CLASSIC, load_trace, make_workload, parse_refs

__all__ = ["CLASSIC", "SimResult", "Step", "load_trace", "make_workload", "parse_refs",
           "run_sim", "simulate"]
