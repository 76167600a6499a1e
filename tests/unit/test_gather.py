import json

import pandas as pd
import pytest

from aquaflow.engine import gather
from aquaflow.io import write_json, write_parquet


def shard_files(tmp_path, name, seqs, rejected_seqs):
    p, r = tmp_path / f"p{name}.parquet", tmp_path / f"r{name}.parquet"
    write_parquet(pd.DataFrame({"seq": seqs, "id": [f"i{s}" for s in seqs]}), p)
    write_parquet(pd.DataFrame({"seq": rejected_seqs, "reason": ["truncated"] * len(rejected_seqs)}), r)
    s = tmp_path / f"{name}.json"
    write_json(
        {
            "seen": len(seqs) + len(rejected_seqs),
            "predicted": len(seqs),
            "rejected": len(rejected_seqs),
            "rejected_by_reason": {"truncated": len(rejected_seqs)} if rejected_seqs else {},
            "per_class": {"a": len(seqs)},
        },
        s,
    )
    return p, r, s


def test_gather_merges_in_input_order_and_reconciles(tmp_path):
    a = shard_files(tmp_path, "2-of-2", [5, 3], [4])
    b = shard_files(tmp_path, "1-of-2", [0, 2], [1])
    out = {
        k: tmp_path / "out" / v
        for k, v in {
            "predictions": "p.parquet",
            "rejected": "r.parquet",
            "summary": "s.json",
            "dataset": "ds",
            "table": "s.tsv",
        }.items()
    }
    gather.run(predictions=[a[0], b[0]], rejected=[a[1], b[1]], summaries=[a[2], b[2]], out=out)
    assert list(pd.read_parquet(out["predictions"])["seq"]) == [0, 2, 3, 5]
    assert list(pd.read_parquet(out["rejected"])["seq"]) == [1, 4]
    summary = json.loads(out["summary"].read_text())
    assert (summary["seen"], summary["predicted"], summary["rejected"]) == (6, 4, 2)
    assert set(summary["shards"]) == {"1-of-2", "2-of-2"}
    assert sorted(p.name for p in out["dataset"].iterdir()) == ["p1-of-2.parquet", "p2-of-2.parquet"]
    table = pd.read_csv(out["table"], sep="\t")
    assert table.loc[table["quantity"] == "seen", "count"].tolist()[0] == 6


def test_gather_refuses_counts_that_do_not_reconcile(tmp_path):
    *_, s = shard_files(tmp_path, "1-of-1", [0], [])
    bad = json.loads(s.read_text())
    bad["seen"] = 2
    s.write_text(json.dumps(bad))
    with pytest.raises(RuntimeError, match="reconcile"):
        gather.merge_summaries([s], tmp_path / "x.json")


def test_atomic_outputs_get_the_usual_permissions(tmp_path):
    import os

    from aquaflow.io import write_json

    write_json({"a": 1}, tmp_path / "x.json")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~mask
