"""AdvertiseGen records -> prompteval samples, and the swapped-value variant.

Used by tests/integration/test_prompteval_advertisegen.py and to rebuild the
committed fixture advertisegen-samples.jsonl.gz:

    /usr/bin/python3 tests/data/eval/advertisegen.py \
        ../shared/data/advertisegen-dev.jsonl tests/data/eval/advertisegen-samples.jsonl.gz

A record's `content` ("类型#上衣*颜色#白色*...") becomes `facts` (a key that
repeats becomes an array), its `summary` the `output`.
"""
import gzip
import json
import random
import sys


def record_to_sample(i, rec, version="1"):
    facts = {}
    for kv in rec["content"].split("*"):
        if "#" not in kv:
            continue
        k, v = kv.split("#", 1)
        if k in facts:
            if not isinstance(facts[k], list):
                facts[k] = [facts[k]]
            if v not in facts[k]:
                facts[k].append(v)
        else:
            facts[k] = v
    return {"version": version, "id": "ag-%04d" % i, "facts": facts,
            "output": rec["summary"]}


def values(facts):
    for k, v in facts.items():
        for x in (v if isinstance(v, list) else [v]):
            yield k, x


def swap_one(samples, seed=8):
    """For each sample, replace every occurrence in the copy of one of its
    attribute values (one that the copy states) by another value that the
    same attribute takes elsewhere in the file and this product lacks.
    Returns (swapped samples, number skipped because nothing could swap)."""
    rng = random.Random(seed)
    vocab = {}
    for s in samples:
        for k, x in values(s["facts"]):
            vocab.setdefault(k, set()).add(x)
    out, skipped = [], 0
    for s in samples:
        own = set(x for _, x in values(s["facts"]))
        cands = [(k, x) for k, x in values(s["facts"]) if x in s["output"]]
        rng.shuffle(cands)
        done = False
        for k, x in cands:
            alts = sorted(a for a in vocab[k] if a not in own)
            if not alts:
                continue
            new = dict(s)
            new["output"] = s["output"].replace(x, rng.choice(alts))
            new["version"] = "2"
            new["swapped"] = {"attribute": k, "from": x}
            out.append(new)
            done = True
            break
        if not done:
            skipped += 1
    return out, skipped


def load_records(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    recs = load_records(src)
    with gzip.open(dst, "wt", encoding="utf-8") as f:
        for i, r in enumerate(recs):
            f.write(json.dumps(record_to_sample(i, r), ensure_ascii=False) + "\n")
