"""The fact-checking bar on real copy: AdvertiseGen's 1,070 human-written
Chinese product copies (../shared/data/advertisegen-dev.jsonl).

- at most 5% of the real copies are flagged;
- at least 90% of copies with one swapped attribute value are flagged.

The data is read from $PROMPTGATE_SHARED/data, else <repo>/../shared/data;
when neither exists, from the samples derived from it and committed as
tests/data/eval/advertisegen-samples.jsonl.gz (same records, converted).
"""
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import BIN

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "eval"
sys.path.insert(0, str(DATA))
import advertisegen  # noqa: E402


def shared_file():
    roots = [os.environ.get("PROMPTGATE_SHARED"), str(REPO.parent / "shared")]
    for root in roots:
        if root and (Path(root) / "data" / "advertisegen-dev.jsonl").exists():
            return Path(root) / "data" / "advertisegen-dev.jsonl"
    return None


def samples():
    src = shared_file()
    if src is not None:
        recs = advertisegen.load_records(str(src))
        return [advertisegen.record_to_sample(i, r) for i, r in enumerate(recs)], str(src)
    with gzip.open(DATA / "advertisegen-samples.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(x) for x in f], "committed fixture"


def score(tmp_path, rows, name):
    path = tmp_path / (name + ".jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    out = tmp_path / name
    subprocess.run([str(BIN / "prompteval"), "run", str(path), "--out", str(out),
                    "--quiet", "--control", "1"], check=True, capture_output=True,
                   timeout=120)
    with open(out / "report.json", encoding="utf-8") as f:
        return {v["version"]: v for v in json.load(f)["versions"]}


def test_committed_fixture_matches_shared_data():
    src = shared_file()
    if src is None:
        pytest.skip("../shared/data/advertisegen-dev.jsonl absent: nothing to compare")
    recs = advertisegen.load_records(str(src))
    want = [advertisegen.record_to_sample(i, r) for i, r in enumerate(recs)]
    with gzip.open(DATA / "advertisegen-samples.jsonl.gz", "rt", encoding="utf-8") as f:
        got = [json.loads(x) for x in f]
    assert got == want


@pytest.mark.parametrize("seed", [8, 1, 2])
def test_advertisegen_bar(tmp_path, seed):
    real, where = samples()
    assert len(real) == 1070, where
    swapped, skipped = advertisegen.swap_one(real, seed=seed)
    assert skipped <= 5  # nearly every copy states a value that can be swapped
    v = score(tmp_path, real + swapped, "ag")
    fp = v["1"]["fact_error_rate"]
    tp = v["2"]["fact_error_rate"]
    print("%s seed %d: real copies flagged %d/%d (%.2f%%), swapped flagged %d/%d (%.2f%%)"
          % (where, seed, fp["successes"], fp["trials"], 100 * fp["value"],
             tp["successes"], tp["trials"], 100 * tp["value"]))
    assert fp["trials"] == 1070
    assert fp["value"] <= 0.05, fp
    assert tp["value"] >= 0.90, tp
    # the report explains itself: worst examples name attribute and values
    ex = v["2"]["worst_examples"][0]["examples"][0]
    assert ex["attribute"] and ex["stated"] and ex["known"]
