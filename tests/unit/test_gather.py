import json
import os

import pandas as pd
import pytest

from aquaflow.data import inputs
from aquaflow.engine import gather
from aquaflow.io import write_json, write_parquet


def shard_files(tmp_path, name, seqs, rejected_seqs, model_id="m1"):
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
            "model_id": model_id,
        },
        s,
    )
    return p, r, s


def outputs(tmp_path):
    names = {"predictions": "p.parquet", "rejected": "r.parquet", "summary": "s.json", "dataset": "ds"}
    return {k: tmp_path / "out" / v for k, v in {**names, "table": "s.tsv"}.items()}


def test_gather_merges_in_input_order_and_reconciles(tmp_path):
    a = shard_files(tmp_path, "2-of-2", [5, 3], [4])
    b = shard_files(tmp_path, "1-of-2", [0, 2], [1])
    out = outputs(tmp_path)
    out["dataset"].mkdir(parents=True)
    (out["dataset"] / "stale.parquet").write_text("from an earlier run")
    gather.run(predictions=[a[0], b[0]], rejected=[a[1], b[1]], summaries=[a[2], b[2]], out=out)
    merged = pd.read_parquet(out["predictions"])
    assert list(merged["seq"]) == [0, 2, 3, 5] and list(merged["id"]) == ["i0", "i2", "i3", "i5"]
    assert list(pd.read_parquet(out["rejected"])["seq"]) == [1, 4]
    summary = json.loads(out["summary"].read_text())
    assert (summary["seen"], summary["predicted"], summary["rejected"]) == (6, 4, 2)
    assert summary["rejected_by_reason"] == {"truncated": 2} and summary["per_class"] == {"a": 4}
    assert summary["model_id"] == "m1" and summary["skipped"] == 0 and summary["skipped_files"] == []
    assert list(summary["shards"]) == ["1-of-2", "2-of-2"] and summary["shards"]["2-of-2"]["predicted"] == 2
    assert sorted(p.name for p in out["dataset"].iterdir()) == ["p1-of-2.parquet", "p2-of-2.parquet"]
    assert list(pd.read_parquet(out["dataset"])["seq"].sort_values()) == [0, 2, 3, 5]
    table = pd.read_csv(out["table"], sep="\t")
    rows = {(r.scope, r.quantity): r.count for r in table.itertuples()}
    assert rows == {
        ("total", "seen"): 6,
        ("total", "predicted"): 4,
        ("total", "rejected"): 2,
        ("total", "skipped"): 0,
        ("rejected", "truncated"): 2,
        ("predicted class", "a"): 4,
        **{(f"shard {n}", k): v for n in ("2-of-2", "1-of-2") for k, v in (("seen", 3), ("predicted", 2))},
        **{(f"shard {n}", "rejected"): 1 for n in ("2-of-2", "1-of-2")},
    }


def test_gather_reports_what_the_listing_skipped_and_every_model(tmp_path):
    a = shard_files(tmp_path, "1-of-2", [0, 1], [], model_id="m2")
    b = shard_files(tmp_path, "2-of-2", [], [2], model_id="m1")  # a shard with no predictions at all
    listed = pd.DataFrame({"seq": [0, 1, 2], "path": ["a.png", "b.png", "c.png"]})
    listed.attrs["skipped"] = [("x.txt", "not an image"), ("y.txt", "not an image"), ("z.png", "empty")]
    inputs.write(listed, tmp_path / "inputs.parquet")
    out = outputs(tmp_path)
    gather.run(
        predictions=[a[0], b[0]],
        rejected=[a[1], b[1]],
        summaries=[a[2], b[2]],
        out=out,
        inputs=tmp_path / "inputs.parquet",
    )
    summary = json.loads(out["summary"].read_text())
    assert summary["model_id"] == "m1,m2"
    assert summary["skipped"] == 3 and summary["skipped_by_reason"] == {"empty": 1, "not an image": 2}
    assert summary["skipped_files"][0] == {"path": "x.txt", "reason": "not an image"}
    assert list(pd.read_parquet(out["predictions"])["seq"]) == [0, 1]
    assert list(pd.read_parquet(out["rejected"])["seq"]) == [2]
    table = pd.read_csv(out["table"], sep="\t")
    assert ("skipped", "empty", 1) in set(table.itertuples(index=False, name=None))


def test_gather_refuses_counts_that_do_not_reconcile(tmp_path):
    *_, s = shard_files(tmp_path, "1-of-1", [0], [])
    bad = json.loads(s.read_text())
    bad["seen"] = 2
    s.write_text(json.dumps(bad))
    with pytest.raises(RuntimeError, match="reconcile"):
        gather.merge_summaries([s], tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("kind", ["predicted", "rejected"])
def test_gather_names_the_shard_whose_table_is_one_row_short(tmp_path, kind):
    a = shard_files(tmp_path, "1-of-2", [0, 1], [2])
    b = shard_files(tmp_path, "2-of-2", [3, 5], [4])
    short = b[0] if kind == "predicted" else b[1]
    write_parquet(pd.read_parquet(short).iloc[:-1], short)
    out = outputs(tmp_path)
    with pytest.raises(RuntimeError, match=rf"shard 2-of-2: \S+ has \d rows, its summary \d {kind}") as err:
        gather.run(predictions=[a[0], b[0]], rejected=[a[1], b[1]], summaries=[a[2], b[2]], out=out)
    assert str(err.value).startswith("shard tables disagree with their summaries: shard 2-of-2: ")
    assert "1-of-2" not in str(err.value)
    assert not out["predictions"].exists() and not out["dataset"].exists()
    first = a[0] if kind == "predicted" else a[1]
    write_parquet(pd.read_parquet(first).iloc[:-1], first)
    with pytest.raises(
        RuntimeError, match=rf"1-of-2: \S+ has \d rows, its summary \d {kind}; shard 2-of-2: "
    ):
        gather.run(predictions=[a[0], b[0]], rejected=[a[1], b[1]], summaries=[a[2], b[2]], out=out)
    with pytest.raises(RuntimeError, match="1 predicted tables for 2 shard summaries"):
        gather.run(predictions=[a[0]], rejected=[a[1], b[1]], summaries=[a[2], b[2]], out=out)


def test_gather_outputs_get_the_usual_permissions(tmp_path):
    """The gather's outputs are written through temporary files (mkstemp makes 0600); they end up
    with the permissions any other file gets under the umask, so other users/jobs can read them."""
    a = shard_files(tmp_path, "1-of-1", [0, 1], [2])
    out = outputs(tmp_path)
    gather.run(predictions=[a[0]], rejected=[a[1]], summaries=[a[2]], out=out)
    mask = os.umask(0)
    os.umask(mask)
    for key in ("predictions", "rejected", "summary", "table"):
        assert out[key].stat().st_mode & 0o777 == 0o666 & ~mask, key
    assert not list((tmp_path / "out").glob(".*"))  # no temporary or partial file left behind


def test_merge_tables_promotes_all_null_columns_and_compresses(tmp_path):
    """A shard whose optional column is all null (Arrow type null) merges with one that has values."""
    import pyarrow.parquet as pq

    write_parquet(pd.DataFrame({"seq": [1, 0], "note": [None, None]}), tmp_path / "a.parquet")
    write_parquet(pd.DataFrame({"seq": [2], "note": ["x"]}), tmp_path / "b.parquet")
    write_parquet(pd.DataFrame({"seq": pd.Series([], dtype="int64")}), tmp_path / "empty.parquet")
    paths = [tmp_path / "a.parquet", tmp_path / "empty.parquet", tmp_path / "b.parquet"]
    assert gather.merge_tables(paths, tmp_path / "m.parquet") == 3
    merged = pd.read_parquet(tmp_path / "m.parquet")
    assert list(merged["seq"]) == [0, 1, 2] and merged["note"].tolist() == [None, None, "x"]
    assert pq.ParquetFile(tmp_path / "m.parquet").metadata.row_group(0).column(0).compression == "ZSTD"
    # only empty shards: an empty table with their columns
    assert gather.merge_tables([tmp_path / "empty.parquet"] * 2, tmp_path / "e.parquet") == 0
    assert list(pd.read_parquet(tmp_path / "e.parquet").columns) == ["seq"]


def test_model_ids_of_old_and_empty_shards_and_rows_without_skips(tmp_path):
    paths = [shard_files(tmp_path, f"{i}-of-3", [i], [])[2] for i in (1, 2, 3)]
    old = json.loads(paths[0].read_text())
    del old["model_id"]  # a summary written before shards recorded their model
    paths[0].write_text(json.dumps(old))
    empty = json.loads(paths[2].read_text())
    empty["model_id"] = ""
    paths[2].write_text(json.dumps(empty))
    summary = gather.merge_summaries(paths, tmp_path / "s.json")
    assert summary["model_id"] == "m1"
    del summary["skipped_by_reason"]  # a summary from before skipped files were reported
    assert ("total", "seen", 3) in gather.summary_rows(summary)


def test_dataset_folder_replaces_a_stale_partial_one_in_a_new_folder(tmp_path):
    a = shard_files(tmp_path, "1-of-1", [0], [])
    out = tmp_path / "new" / "deeper" / "ds"
    stale = out.with_name(f".{out.name}.partial")
    stale.mkdir(parents=True)
    (stale / "old.parquet").write_text("left by a killed run")
    gather.link_dataset([a[0]], out)
    assert [p.name for p in out.iterdir()] == ["p1-of-1.parquet"] and not stale.exists()
    assert out.joinpath("p1-of-1.parquet").stat().st_ino == a[0].stat().st_ino  # a hard link, not a copy


def test_the_light_steps_import_no_deep_learning_framework():
    """The gather, folds and staging steps run once per campaign or shard on a cluster: importing
    torch or TensorFlow there would cost each job seconds for nothing (the shard steps import it)."""
    import subprocess
    import sys

    light = ["detect", "cv", "sound", "staging", "gather", "semantic"]
    heavy = ("torch", "tensorflow", "keras", "timm", "ultralytics")
    code = "".join(f"import aquaflow.engine.{m}\n" for m in light)
    code += f"import sys\nprint(' '.join(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [], f"imported by aquaflow.engine.{light}: {done.stdout}"
