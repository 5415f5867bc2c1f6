"""Which keras_hub families ``it.lrp`` explains under AttnLRP and CP-LRP: every family of
``tests/hub_families.py`` (tiny models from their constructors, random weights, nothing downloads) is
built and explained once per preset; a row per family says ``ok`` or the first error::

    python benchmarks/keras_hub_census.py                  # all families
    python benchmarks/keras_hub_census.py Gemma Falcon     # some families only

The last line counts the families explained under both presets ("explains N of M").
"""

from __future__ import annotations

import os
import sys
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

PRESETS = ("attnlrp", "cp_lrp")


def _first_error(e: BaseException) -> str:
    line = " ".join(str(e).split())
    return f"{type(e).__name__}: {line[:300]}"


def _explain(case, rule: str) -> str:
    import numpy as np

    import interprettensor as it

    R = it.lrp(case.model, case.inputs, rule=rule, position=case.position)
    r = R[case.key] if case.key is not None else R
    shape = (case.inputs[case.key] if case.key is not None else case.inputs).shape
    if r.shape != shape:
        return f"relevance of shape {r.shape}, expected {shape}"
    if not np.isfinite(r).all():
        return "relevance not finite"
    if not np.abs(r).sum() > 0:
        return "relevance all zero"
    return "ok"


def main(names: list[str]) -> int:
    import hub_families

    names = names or list(hub_families.FAMILIES)
    unknown = [n for n in names if n not in hub_families.FAMILIES]
    if unknown:
        print(f"unknown families {unknown}; known: {list(hub_families.FAMILIES)}")
        return 2
    width = max(map(len, names))
    explained = 0
    for name in names:
        t0 = time.perf_counter()
        try:
            case = hub_families.build(name)
        except Exception as e:  # noqa: BLE001 - a census: report and go on
            print(f"{name:<{width}}  build failed: {_first_error(e)}", flush=True)
            continue
        results = []
        for rule in PRESETS:
            try:
                results.append(_explain(case, rule))
            except Exception as e:  # noqa: BLE001
                results.append(_first_error(e))
                if os.environ.get("CENSUS_TRACEBACK"):
                    traceback.print_exc()
        explained += all(r == "ok" for r in results)
        cells = "  ".join(f"{rule}: {r}" for rule, r in zip(PRESETS, results))
        print(f"{name:<{width}}  {cells}  ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"explains {explained} of {len(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
