"""The inference input table pinned down: manifests of every format, file names that are not UTF-8,
paths outside their root, relocation, the concatenation of inputs and the skipped-files metadata."""

from __future__ import annotations

import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aquaflow.data import imaging, inputs, roots

LATIN1 = os.fsdecode(b"caf\xe9.png")  # a Latin-1 name, surrogate-escaped


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(imaging.encode(__import__("numpy").zeros((4, 4, 3), "uint8")))
    return path


def test_folder_listing_and_a_missing_folder(tmp_path):
    _touch(tmp_path / "d/a.png")
    _touch(tmp_path / "d/sub/b.png")
    (tmp_path / "d/notes.txt").write_text("x")
    df = inputs.from_folder(tmp_path / "d", [".png"])
    assert df["source"].tolist() == [str(tmp_path / "d/a.png"), str(tmp_path / "d/sub/b.png")]
    assert [p for p, _ in df.attrs["skipped"]] == [str(tmp_path / "d/notes.txt")]
    with pytest.raises(FileNotFoundError, match=r"^inference input folder does not exist: .*nope$"):
        inputs.from_folder(tmp_path / "nope", [".png"])


@pytest.mark.parametrize(("suffix", "sep"), [(".csv", ","), (".tsv", "\t"), (".txt", "\t")])
def test_manifests_by_suffix_relative_absolute_and_empty_cells(tmp_path, suffix, sep):
    rows = [
        "path" + sep + "station",
        "a.png" + sep + "s1",
        "/abs/b.png" + sep + "s2",
        sep + "s3",
        "x,y.png" + sep + "0042",
    ]
    if sep == ",":
        rows[4] = '"x,y.png",0042'
    (tmp_path / f"m{suffix}").write_text("\n".join(rows) + "\n")
    df = inputs.from_manifest(tmp_path / f"m{suffix}", "path")
    assert df.columns.tolist() == ["source", "station"]
    assert df["source"].tolist() == [str(tmp_path / "a.png"), "/abs/b.png", "", str(tmp_path / "x,y.png")]
    assert df["station"].tolist() == ["s1", "s2", "s3", "0042"]  # text, not numbers
    with pytest.raises(ValueError, match=r"m\.\w+: no column 'file' \(columns: \['path', 'station'\]\)$"):
        inputs.from_manifest(tmp_path / f"m{suffix}", "file")


def test_parquet_manifest_and_a_latin1_csv(tmp_path):
    pd.DataFrame({"f": ["a.png", None, float("nan"), "/b.png"], "n": [1, 2, 3, 4]}).to_parquet(
        tmp_path / "m.parquet"
    )
    df = inputs.from_manifest(tmp_path / "m.parquet", "f")
    assert df["source"].tolist() == [str(tmp_path / "a.png"), "", "", "/b.png"] and df["n"].tolist() == [
        1,
        2,
        3,
        4,
    ]
    (tmp_path / "l.csv").write_bytes(b"f\ncaf\xe9.png\n")
    assert inputs.from_manifest(tmp_path / "l.csv", "f")["source"].tolist() == [str(tmp_path / LATIN1)]


def test_non_utf8_names_carry_their_bytes_next_to_source():
    table = pd.DataFrame({"seq": [0, 1], "source": ["/d/a.png", "/d/" + LATIN1], "x": [1, 2]})
    out = inputs.carry_file_names(table)
    assert out.columns.tolist() == ["seq", "source", "source_hex", "x"]
    assert out["source_hex"].tolist() == ["", b"/d/caf\xe9.png".hex()]
    assert out["source"].tolist()[1] == imaging.display_path("/d/" + LATIN1)
    assert inputs.source_paths(out) == ["/d/a.png", b"/d/caf\xe9.png"]
    plain = pd.DataFrame({"source": ["/d/a.png"]})
    assert inputs.carry_file_names(plain) is plain and inputs.source_paths(plain) == ["/d/a.png"]


def test_rows_outside_their_root_are_rejected_never_read():
    table = pd.DataFrame({"source": ["a", "b"], inputs.OUTSIDE: [False, True]})
    a, b = inputs.read_targets(table)
    assert a == "a" and isinstance(b, imaging.Rejected) and b.reason == roots.OUTSIDE_ROOT
    assert b.detail == (
        "the path resolves outside its input's folder (manifest, run or dataset); set "
        "`allow_paths_outside_root: true` in the use case only if the data really live elsewhere"
    )
    assert inputs.read_targets(pd.DataFrame({"source": ["a"]})) == ["a"]


def test_relocate_renames_the_local_root_to_the_logical_one():
    table = pd.DataFrame(
        {"seq": [0, 1, 2], "source": ["/local/x/a.png", "/other/b.png", "/local/x/" + LATIN1]}
    )
    table = inputs.carry_file_names(table)
    table.attrs = {"skipped": [("/local/x/s", "hidden")]}
    out = inputs.relocate(table, "/local/x/", "/store/y")
    assert out["source"].tolist()[:2] == ["/store/y/a.png", "/other/b.png"]
    assert inputs.source_paths(out) == ["/store/y/a.png", "/other/b.png", b"/store/y/caf\xe9.png"]
    assert out.columns.tolist() == ["seq", "source", "source_hex"] and out.attrs == table.attrs
    assert inputs.relocate(table, "/local/x", "") is table
    assert inputs.relocate(table, "/local/x/", "/local/./x") is table
    ascii_only = pd.DataFrame({"source": ["/local/x/a.png"]})
    moved = inputs.relocate(ascii_only, "/local/x", "/s")
    assert moved.columns.tolist() == ["source"] and moved["source"].tolist() == ["/s/a.png"]
    assert ascii_only["source"].tolist() == ["/local/x/a.png"]  # the input table is not changed


def test_build_concatenates_inputs_marks_outside_rows_and_numbers_them(tmp_path):
    _touch(tmp_path / "ds/a.png")
    _touch(tmp_path / "f/b.png")
    (tmp_path / "f/.hidden.png").write_bytes(b"")
    _touch(tmp_path / "out.png")
    (tmp_path / "m").mkdir()
    (tmp_path / "m/list.csv").write_text("p,k\n../out.png,1\nc.png,2\n")
    pd.DataFrame({"path": ["items/z.png"]}).to_parquet(tmp_path / "f/items.parquet")
    specs = [
        {"kind": "dataset", "extensions": [".png"]},
        {"kind": "folder", "path": str(tmp_path / "f"), "extensions": [".png"]},
        {"kind": "manifest", "path": str(tmp_path / "m/list.csv"), "column": "p"},
        {"kind": "preprocessed", "column": "path"},
    ]
    table = inputs.build(specs, tmp_path / "ds", dataset_root=tmp_path / "f")
    assert table["seq"].tolist() == [0, 1, 2, 3, 4] and table["seq"].dtype == "int64"
    assert table["source"].tolist() == [
        str(tmp_path / "ds/a.png"), str(tmp_path / "f/b.png"), str(tmp_path / "m/../out.png"),
        str(tmp_path / "m/c.png"), str(tmp_path / "f/items/z.png"),
    ]  # fmt: skip
    assert table[inputs.OUTSIDE].tolist() == [False, False, True, False, False]
    assert table[inputs.OUTSIDE].dtype == bool
    hidden, parquet = (
        (str(tmp_path / "f/.hidden.png"), "hidden"),
        (str(tmp_path / "f/items.parquet"), "extension"),
    )
    assert table.attrs == {"skipped": [hidden, parquet]}
    trusted = inputs.build(specs, tmp_path / "ds", dataset_root=tmp_path / "f", allow_outside_root=True)
    assert inputs.OUTSIDE not in trusted and len(trusted) == 5
    inside = inputs.build(specs[:2], tmp_path / "ds")
    assert inside.columns.tolist() == ["seq", "source"]
    empty = inputs.build([], tmp_path / "ds")
    assert empty.columns.tolist() == ["seq", "source"] and len(empty) == 0
    with pytest.raises(
        ValueError, match=r"^input kind 'preprocessed' needs preprocess steps in the use case$"
    ):
        inputs.build(specs[3:], tmp_path / "ds")
    with pytest.raises(ValueError, match=r"^unknown input kind 'ftp'$"):
        inputs.build([{"kind": "ftp"}], tmp_path / "ds")


def test_skipped_files_travel_in_the_parquet_metadata(tmp_path):
    table = pd.DataFrame({"seq": [0], "source": ["a.png"]})
    table.attrs = {
        "skipped": [(f"f{i}", "extension" if i % 2 else "hidden") for i in range(1003)]
    }  # hidden first
    inputs.write(table, tmp_path / "i.parquet")
    meta = inputs.read_skipped(tmp_path / "i.parquet")
    assert list(meta["counts"].items()) == [("extension", 501), ("hidden", 502)]
    assert len(meta["files"]) == inputs.SKIPPED_LISTED == 1000
    assert meta["files"][1] == {"path": "f1", "reason": "extension"}
    assert pd.read_parquet(tmp_path / "i.parquet").equals(table)
    assert pq.read_metadata(tmp_path / "i.parquet").row_group(0).column(0).compression == "ZSTD"
    pd.DataFrame({"seq": [0]}).to_parquet(tmp_path / "plain.parquet")
    assert inputs.read_skipped(tmp_path / "plain.parquet") == {"counts": {}, "files": []}
    inputs.write(pd.DataFrame({"seq": [0], "source": ["a"]}), tmp_path / "none.parquet")
    assert inputs.read_skipped(tmp_path / "none.parquet") == {"counts": {}, "files": []}


def test_metadata_columns_leave_out_seq_source_and_the_root_flag():
    table = pd.DataFrame(
        {"seq": [0], "source": ["a"], "crop_x": [1], "station": ["s"], inputs.OUTSIDE: [False]}
    )
    cols, schema = inputs.metadata_columns(table)
    assert cols == ["crop_x", "station"] and schema.names == cols
    assert schema.field("crop_x").type == pa.int64() and schema.field("station").type == pa.string()
    assert inputs.metadata_columns(table[["seq", "source"]]) == ([], pa.schema([]))


def test_a_folder_lists_only_the_extensions_asked_for(tmp_path):
    _touch(tmp_path / "d/a.png")
    _touch(tmp_path / "d/b.tif")
    df = inputs.from_folder(tmp_path / "d", [".tif"])
    assert df["source"].tolist() == [str(tmp_path / "d/b.tif")]
    assert df.attrs["skipped"] == [(str(tmp_path / "d/a.png"), "extension")]


def test_manifest_columns_of_digits_stay_text_and_numbers_in_a_parquet_list_are_names(tmp_path):
    (tmp_path / "m.csv").write_text("path,station\n1,0042\n2,7\n")
    df = inputs.from_manifest(tmp_path / "m.csv", "path")
    assert df["source"].tolist() == [str(tmp_path / "1"), str(tmp_path / "2")]
    assert df["station"].tolist() == ["0042", "7"]
    pd.DataFrame({"f": [17.0, float("nan"), 2.5]}).to_parquet(tmp_path / "m.parquet")
    numbers = inputs.from_manifest(tmp_path / "m.parquet", "f")
    assert numbers["source"].tolist() == [str(tmp_path / "17.0"), "", str(tmp_path / "2.5")]


def test_build_reads_one_file_and_a_flowcam_run_and_numbers_rows_from_zero(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.csv").write_text(
        "Image File,Image X,Image Y,Image Width,Image Height,Particle ID\n"
        "run_000001.tif,1,2,3,4,7\n../away.tif,0,0,5,5,8\n"
    )
    (run / "run_summary.csv").write_text("Name,Value\nparticles,2\n")
    one = _touch(tmp_path / "one/a.png")
    single = inputs.build([{"kind": "file", "path": str(one)}], None)
    assert single.columns.tolist() == ["seq", "source"] and single["source"].tolist() == [str(one)]
    flowcam = inputs.build([{"kind": "flowcam", "path": str(run)}], None)
    assert flowcam.columns.tolist() == [
        "seq", "source", "crop_x", "crop_y", "crop_w", "crop_h", "particle_id", inputs.OUTSIDE
    ]  # fmt: skip
    assert flowcam["source"].tolist() == [str(run / "run_000001.tif"), str(run / "../away.tif")]
    assert flowcam[inputs.OUTSIDE].tolist() == [False, True]
    assert flowcam[["crop_x", "crop_y", "crop_w", "crop_h", "particle_id"]].to_numpy().tolist() == [
        [1, 2, 3, 4, 7],
        [0, 0, 5, 5, 8],
    ]
    both = inputs.build([{"kind": "flowcam", "path": str(run)}, {"kind": "file", "path": str(one)}], None)
    assert both["source"].tolist() == [*flowcam["source"].tolist(), str(one)]
    assert both.index.equals(pd.RangeIndex(3)) and both["seq"].tolist() == [0, 1, 2]


def test_write_drops_the_index_and_keeps_pandas_dtypes(tmp_path):
    table = pd.DataFrame(
        {"seq": [0, 1], "source": ["a.png", "b.png"], "crop_x": pd.array([3, None], dtype="Int64")},
        index=[5, 7],
    )
    inputs.write(table, tmp_path / "i.parquet")
    assert pq.read_schema(tmp_path / "i.parquet").names == ["seq", "source", "crop_x"]
    back = pd.read_parquet(tmp_path / "i.parquet")
    assert back.index.equals(pd.RangeIndex(2)) and back["crop_x"].dtype == "Int64"
    assert back.equals(table.reset_index(drop=True))
