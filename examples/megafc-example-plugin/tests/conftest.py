"""Let the example's tests run from megafc's test suite without installing the example."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
