"""A queue-only worker for the concurrency test: claims jobs exactly as `arbench worker` does, but
"processes" each by logging its id (no child process), so 50 jobs x 4 workers stay fast."""

from __future__ import annotations

import sys
import time

from harness.store import Store
from harness.submissions import advance, claim


def main(db_url: str, worker: str, log_path: str) -> None:
    store = Store(db_url)
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 3.0:
        sub_id = claim(store, worker, lease_seconds=30)
        if sub_id is None:
            time.sleep(0.05)
            continue
        idle_since = time.monotonic()
        with open(log_path, "a") as log:
            log.write(f"{sub_id}\n")
        time.sleep(0.01)
        assert advance(store, sub_id, worker, "running", "processing")
        assert advance(store, sub_id, worker, "finished", "done")


if __name__ == "__main__":
    main(*sys.argv[1:4])
