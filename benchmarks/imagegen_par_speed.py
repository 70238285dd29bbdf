"""PAR region-parallel vs raster decoding of the bundled digits generators, through the
`c2i-speedup-digits` task (harness timing protocol: interleaved, warm-up excluded, paired bootstrap CI).

    python benchmarks/imagegen_par_speed.py [--items 10] [--rounds 3] [--out FILE]

Target (issue #10): PAR (19 network passes per image) at least 2.5x faster than raster (64 passes) at
batch 1 on the same CPU; the step ratio 64/19 = 3.37 bounds it. Prints a Markdown table and writes the
raw numbers as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
from pathlib import Path

from harness.runner import RunOptions, Runner
from harness.store import Store

TARGET_B1 = 2.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "imagegen_par_speed.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(Store(f"sqlite:///{tmp}/bench.db"), RunOptions(progress=False))
        result = runner.run("c2i-speedup-digits", "digits-ar-par", {"items": args.items, "rounds": args.rounds})
        record = runner.store.records()[0]
    values = {m.name: (m.value, m.ci_low, m.ci_high) for m in result.metrics}
    rows = ["| batch | PAR images/s | raster images/s | PAR ms/image | raster ms/image | speedup (95% CI) |",
            "|---:|---:|---:|---:|---:|---|"]
    for b in (1, 16):
        s = values[f"speedup_b{b}"]
        rows.append(f"| {b} | {values[f'images_per_s_b{b}'][0]:.1f} | {values[f'images_per_s_b{b}_baseline'][0]:.1f} | "
                    f"{values[f'latency_ms_per_image_b{b}'][0]:.1f} | "
                    f"{values[f'latency_ms_per_image_b{b}_baseline'][0]:.1f} | {s[0]:.2f}x [{s[1]:.2f}, {s[2]:.2f}] |")
    print("\n".join(rows))
    ok = values["speedup_b1"][0] >= TARGET_B1
    print(f"\ntarget PAR >= {TARGET_B1}x at batch 1: {'met' if ok else 'NOT met'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": dt.date.today().isoformat(), "hardware": record["provenance"].get("hardware")
        or record["signature"].split("hardware:")[-1].split("|")[0],
        "items": args.items, "rounds": args.rounds, "metrics": values, "target_b1": TARGET_B1, "met": ok}, indent=1))


if __name__ == "__main__":
    main()
