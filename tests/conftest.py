import sys
from pathlib import Path

# codegen/ lives at the top of the repository, beside src/.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
