"""Generate N A/B samples for the throughput bench (stdlib only).

    /usr/bin/python3 evaluator/bench/gen_samples.py N OUT.jsonl [--distinct-facts] [SOURCE]

SOURCE is an AdvertiseGen-derived samples file (default: the committed
tests/data/eval/advertisegen-samples.jsonl.gz). Each output line takes a
real product's facts and copy, an arm ("3" or "4"), a user, and outcome
counts; arm 4 converts a little better. Deterministic (seeded).

--distinct-facts shuffles the order of each line's facts, so that almost no
two lines carry the same facts text: the worst case for the first pass,
which skips decoding facts texts it has already seen.
"""
import gzip
import json
import os
import random
import sys

here = os.path.dirname(os.path.abspath(__file__))
args = [a for a in sys.argv[1:] if a != "--distinct-facts"]
distinct = "--distinct-facts" in sys.argv
n, out = int(args[0]), args[1]
src = args[2] if len(args) > 2 else os.path.join(
    here, "..", "..", "tests", "data", "eval", "advertisegen-samples.jsonl.gz")
opener = gzip.open if src.endswith(".gz") else open
with opener(src, "rt", encoding="utf-8") as f:
    base = [json.loads(line) for line in f if line.strip()]
rng = random.Random(20261128)
with open(out, "w", encoding="utf-8") as f:
    for i in range(n):
        b = base[i % len(base)]
        facts = b["facts"]
        if distinct:
            keys = list(facts)
            rng.shuffle(keys)
            facts = {k: facts[k] for k in keys}
            facts["批次"] = "b%d" % (i % 97)
        arm = "4" if rng.random() < 0.5 else "3"
        clicked = rng.random() < (0.11 if arm == "4" else 0.10)
        conv = clicked and rng.random() < (0.30 if arm == "4" else 0.28)
        s = {"version": arm, "prompt": "product_copy", "id": "s%d" % i,
             "user": "u%d" % rng.randrange(1 << 30),
             "variables": {"product": b["id"]}, "facts": facts,
             "output": b["output"], "impressions": 1,
             "clicks": int(clicked), "conversions": int(conv)}
        f.write(json.dumps(s, ensure_ascii=False) + "\n")
