"""Taxonomy tables: committed per use case, strict parsing, WoRMS fill logic (no network here)."""

from __future__ import annotations

import json

import pytest

from aquaflow.standards import taxonomy
from aquaflow.standards.taxonomy import LSID_RE, Taxon, TaxonomyError

from ..conftest import REPO

# shipped use cases whose labels are not organisms, so they ship no taxonomy table (and say why)
NO_TAXA = {
    "underwater_noise": "vessel classes of task sound, which writes no Darwin Core Archive",
    "oil_spill": "sea / oil pixels of task semantic, which writes no Darwin Core Archive",
    "s2_coast": "water / land pixels of task semantic, which writes no Darwin Core Archive",
}


def shipped_labels(planktonclas_resources) -> dict[str, list[str]]:
    """Every label every shipped use case can predict, from the data its config names."""
    from aquaflow.synthetic.litter import CLASSES as LITTER
    from aquaflow.synthetic.scenes import KINDS

    ucs = {p.stem for p in (REPO / "config/usecases").glob("*.yaml")} - set(NO_TAXA)
    assert not any((REPO / f"config/taxonomy/{uc}.tsv").exists() for uc in NO_TAXA)
    labels = {
        "flowcam": (planktonclas_resources / "dataset_files/classes.txt").read_text().split(),
        "zooscan": ["multiple", "single"],
        "litter": list(LITTER),
        "fish_detection": list(KINDS["fish"][1]),
        "cold_coral": list(KINDS["coral"][1]),
        "diatoms": list(KINDS["diatoms"][1]),
        "beach": list(KINDS["beach"][1]),
    }
    assert set(labels) == ucs, "a new shipped use case needs its labels (and taxonomy table) here"
    return labels


def test_committed_tables_cover_every_label_of_every_shipped_use_case(planktonclas_resources):
    for uc, labels in shipped_labels(planktonclas_resources).items():
        table = taxonomy.read_table(REPO / f"config/taxonomy/{uc}.tsv")
        assert sorted(table) == sorted(labels), uc
        for t in table.values():  # a verified row has an LSID, a date and a source URL
            assert bool(LSID_RE.match(t.lsid)) == (t.status == "verified")
            assert t.aphia_id is None or t.status == "verified"
            if t.status == "verified":
                assert t.checked and "https://" in t.source and str(t.aphia_id) in t.source, t
            assert t.note or t.status == "verified", f"{uc} {t.label}: an unverified/non-taxon row says why"
    # the FlowCam demo publishes all six classes; its non-obvious mappings say so in the note
    flowcam = taxonomy.read_table(REPO / "config/taxonomy/flowcam.tsv")
    assert {t.status for t in flowcam.values()} == {"verified"}
    assert {lb: t.aphia_id for lb, t in flowcam.items()} == {
        "Actinoptychus": 148947,
        "Bacillariophyceae": 148899,
        "Ciliophora": 11,
        "Dinoflagellata": 19542,
        "Noctilucales": 19542,
        "Tripos": 494057,
    }
    assert "Dinophyceae" in flowcam["Noctilucales"].note
    zooscan = taxonomy.read_table(REPO / "config/taxonomy/zooscan.tsv")
    assert zooscan["multiple"].status == "not_a_taxon" and zooscan["single"].scientific_name == "Biota"


def test_check_fails_on_an_unverified_campaign_label_unless_the_config_opts_in(tmp_path, capsys):
    table = {
        "A": Taxon("A", "Acartia", 104108, status="verified"),
        "B": Taxon("B", "Bx"),
        "d": Taxon("d", status="not_a_taxon"),
    }
    assert set(taxonomy.check_labels(["A", "d"], table, "error")) == {"A", "d"}
    with pytest.raises(TaxonomyError, match=r"label\(s\) \['B'\] .*export.dwca.unverified: exclude"):
        taxonomy.check_labels(["A", "B"], table, "error", "t.tsv")
    for opt in ("exclude", "include"):
        assert set(taxonomy.check_labels(["A", "B"], table, opt)) == {"A", "B"}
    with pytest.raises(TaxonomyError, match="not one of"):
        taxonomy.check_labels(["A"], table, "maybe")
    path = tmp_path / "t.tsv"
    taxonomy.write_table(table.values(), path)
    (tmp_path / "classes.txt").write_text("A\nB\n")
    assert taxonomy.main(["check", str(path), "--labels", str(tmp_path / "classes.txt")]) == 1
    assert "['B']" in capsys.readouterr().err
    args = ["check", str(path), "--labels", str(tmp_path / "classes.txt"), "--unverified", "exclude"]
    assert taxonomy.main(args) == 0
    assert json.loads(capsys.readouterr().out)["unverified"] == ["B"]


def test_write_read_roundtrip_and_init_cli(tmp_path):
    (tmp_path / "classes.txt").write_text("Acartia\ndetritus\n")
    assert taxonomy.main(["init", str(tmp_path / "t.tsv"), str(tmp_path / "classes.txt")]) == 0
    table = taxonomy.read_table(tmp_path / "t.tsv")
    assert table["Acartia"] == Taxon("Acartia", "Acartia")
    taxonomy.write_table([*table.values(), Taxon("bubble", status="not_a_taxon")], tmp_path / "t.tsv")
    assert taxonomy.split_status(taxonomy.read_table(tmp_path / "t.tsv"))["not_a_taxon"] == ["bubble"]


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("A\tA\t12x\tGenus\tAnimalia\tverified", "aphiaID '12x'"),
        ("A\tA\t\tGenus\tAnimalia\tverified", "needs its aphiaID"),
        ("A\tA\t1\tGenus\tAnimalia\tok", "status 'ok'"),
        ("A\t\t\t\t\tunverified", "no scientificName"),
        ("A\tA\t\t\t\t", "status '' is not one of"),
        ("A\tA\t\t\t\tnot_a_taxon", "must have no scientificName"),
    ],
)
def test_bad_rows_name_file_and_row(tmp_path, row, needle):
    path = tmp_path / "t.tsv"
    path.write_text("\t".join(taxonomy.COLUMNS[:6]) + "\n" + row + "\n")
    with pytest.raises(TaxonomyError) as err:
        taxonomy.read_table(path)
    assert needle in str(err.value) and "t.tsv row 2" in str(err.value)


def test_lsid_only_for_verified_rows_with_an_aphia_id(tmp_path):
    assert (
        Taxon("A", "Acartia", 104108, status="verified").lsid == "urn:lsid:marinespecies.org:taxname:104108"
    )
    assert Taxon("A", "Acartia", 104108, status="unverified").lsid == ""
    assert Taxon("A", "Acartia", None, status="unverified").lsid == ""
    path = tmp_path / "t.tsv"
    rows = [
        "A\tAcartia\t104108\tGenus\tAnimalia\tunverified",
        "B\tCalanus\t104152\tGenus\tAnimalia\tverified",
    ]
    path.write_text("\t".join(taxonomy.COLUMNS[:6]) + "\n" + "\n".join(rows) + "\n")
    table = taxonomy.read_table(path)
    assert table["A"].aphia_id == 104108 and table["A"].lsid == ""
    assert LSID_RE.match(table["B"].lsid) and table["B"].lsid.endswith(":104152")


def test_missing_labels_and_missing_table(tmp_path):
    with pytest.raises(TaxonomyError, match=r"no row for model label\(s\) \['B'\]"):
        taxonomy.resolve(["A", "B"], {"A": Taxon("A", "A")}, "x.tsv")
    with pytest.raises(TaxonomyError, match=r"^taxonomy table: no row for model label\(s\) \['B'\]"):
        taxonomy.resolve(["B"], {})
    with pytest.raises(SystemExit):  # no subcommand
        taxonomy.main([])
    with pytest.raises(TaxonomyError, match="does not exist"):
        taxonomy.read_table(tmp_path / "none.tsv")


def test_fill_marks_only_exact_accepted_matches():
    """`fill` with the shape of WoRMS's AphiaRecordsByMatchNames answer (one list per name)."""
    table = {
        "Acartia": Taxon("Acartia", "Acartia"),
        "Oithona": Taxon("Oithona", "Oithona"),
        "blob": Taxon("blob", "Blobus"),
        "ok": Taxon("ok", "Okia", 5, "Genus", "Animalia", "verified", "2020-01-01"),
    }
    asked = []

    def match(names):
        asked.extend(names)
        acartia = {"AphiaID": 104108, "scientificname": "Acartia", "rank": "Genus", "kingdom": "Animalia"}
        return [
            [{**acartia, "match_type": "exact", "status": "accepted"}],
            [{"AphiaID": 1, "scientificname": "Oithonax", "match_type": "phonetic", "status": "accepted"}],
            [],
        ]

    out = taxonomy.fill(table, match, today="2026-11-27")
    assert asked == ["Acartia", "Oithona", "Blobus"]  # verified rows are not looked up again
    assert out["Acartia"].status == "verified" and out["Acartia"].lsid.endswith(":104108")
    assert out["Acartia"].checked == "2026-11-27"
    assert out["Oithona"].status == "unverified" and "Oithonax 1 (phonetic" in out["Oithona"].note
    assert out["blob"].status == "unverified" and "no match" in out["blob"].note
    assert out["ok"] == table["ok"]
    assert out["Acartia"] == Taxon(
        "Acartia",
        "Acartia",
        104108,
        "Genus",
        "Animalia",
        "verified",
        "2026-11-27",
        "",
        source=taxonomy.WORMS_URL + "104108",  # where it was checked
    )  # rank and kingdom from WoRMS
    assert out["Oithona"].note == ("WoRMS 2026-11-27: Oithonax 1 (phonetic, accepted); check by hand")
    assert out["blob"].note == "WoRMS 2026-11-27: no match; check by hand"


def test_fill_keeps_own_rank_and_note_and_lists_five_candidates():
    table = {"A": Taxon("A", "aa", rank="Genus", kingdom="Animalia", note="mine"), "B": Taxon("B", "Bb")}
    many = [
        {"AphiaID": i, "scientificname": f"B{i}", "match_type": "near_1", "status": "unaccepted"}
        for i in range(7)
    ]
    exact = {"AphiaID": 9, "scientificname": "Aa", "match_type": "exact", "status": "accepted"}
    out = taxonomy.fill(table, lambda names: [[exact], many], today="2026-12-03")
    assert out["A"] == Taxon(
        "A", "Aa", 9, "Genus", "Animalia", "verified", "2026-12-03", "mine", source=taxonomy.WORMS_URL + "9"
    )
    listed = ", ".join(f"B{i} {i} (near_1, unaccepted)" for i in range(5))
    assert out["B"].note == f"WoRMS 2026-12-03: {listed}; check by hand"
    with pytest.raises(ValueError):  # an answer that does not have one list per name asked
        taxonomy.fill(table, lambda names: [[exact]], today="2026-12-03")
    assert taxonomy.fill({"ok": Taxon("ok", "Okia", 5, status="verified")}, None) == {
        "ok": Taxon("ok", "Okia", 5, status="verified")
    }  # nothing to look up: no call at all


def test_every_field_round_trips_and_the_cli_checks_and_refuses_to_overwrite(tmp_path, capsys):
    full = Taxon(
        "Nocti", "Noctiluca scintillans", 109391, "Species", "Chromista", "verified", "2026-01-02", "é note"
    )
    path = tmp_path / "t.tsv"
    taxonomy.write_table([full, Taxon("bubble", status="not_a_taxon", note="air")], path)
    assert path.read_text(encoding="utf-8").startswith("#")  # the header comment explains the columns
    assert taxonomy.read_table(path) == {
        "Nocti": full,
        "bubble": Taxon("bubble", status="not_a_taxon", note="air"),
    }
    assert taxonomy.main(["check", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "not_a_taxon": ["bubble"],
        "unverified": [],
        "verified": ["Nocti"],
    }
    (tmp_path / "card.json").write_text(json.dumps({"classes": ["b", "a"]}))
    assert taxonomy.labels_from(tmp_path / "card.json") == ["b", "a"]
    assert taxonomy.main(["init", str(tmp_path / "new.tsv"), str(tmp_path / "card.json")]) == 0
    assert list(taxonomy.read_table(tmp_path / "new.tsv")) == ["b", "a"]
    with pytest.raises(SystemExit):
        taxonomy.main(["init", str(path), str(tmp_path / "card.json")])
    assert "t.tsv exists; edit it or use `fill`" in capsys.readouterr().err
    path.write_text("label\tscientificName\n")
    with pytest.raises(
        TaxonomyError, match=r"missing column\(s\) \['aphiaID', 'taxonRank', 'kingdom', 'status'\]"
    ):
        taxonomy.read_table(path)
    path.write_text("\t".join(taxonomy.COLUMNS[:6]) + "\nA\tA\t\t\t\tunverified\nA\tA\t\t\t\tunverified\n")
    with pytest.raises(TaxonomyError, match=r"t.tsv row 3: label 'A' appears twice"):
        taxonomy.read_table(path)
    path.write_text("\t".join(taxonomy.COLUMNS[:6]) + "\n\tA\t\t\t\tunverified\n")
    with pytest.raises(TaxonomyError, match="row 2: empty label"):
        taxonomy.read_table(path)
