import gc
import os
import sys
from pathlib import Path

# codegen/ lives at the top of the repository, beside src/.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# SCAPROUST_GC_STRESS=1 (make test-deep) runs the cyclic garbage collector after every
# hundred allocations, so that it fires inside every critical section sooner or later: how
# a socket collected under the session's lock was found to deadlock, and how counters that
# counted a purged reply twice showed up in the REQ/REP device model.
if os.environ.get("SCAPROUST_GC_STRESS"):
    gc.set_threshold(100, 5, 5)
