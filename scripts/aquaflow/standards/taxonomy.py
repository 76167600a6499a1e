"""Model label -> WoRMS taxon: the committed per-use-case table `config/taxonomy/<usecase>.tsv`.

One row per model label (tab-separated, `#` lines are comments):

    label  scientificName  aphiaID  taxonRank  kingdom  status  checked  source  note

`status` is `verified` (AphiaID matched in WoRMS; `checked` = date, `source` = where it was checked,
a URL), `unverified` (name only: no
scientificNameID is written until the AphiaID is checked) or `not_a_taxon` (detritus, bubbles,
"multiple": excluded from occurrences and listed in the export report). WoRMS needs the network,
so the table is filled once where internet exists and committed:

    python -m aquaflow.standards.taxonomy init  config/taxonomy/<uc>.tsv  <classes.txt | model_card.json>
    python -m aquaflow.standards.taxonomy fill  config/taxonomy/<uc>.tsv      # pyworms, needs internet
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

LSID_PREFIX = "urn:lsid:marinespecies.org:taxname:"
LSID_RE = re.compile(r"^urn:lsid:marinespecies\.org:taxname:[1-9][0-9]*$")
COLUMNS = [
    "label",
    "scientificName",
    "aphiaID",
    "taxonRank",
    "kingdom",
    "status",
    "checked",
    "source",
    "note",
]
WORMS_URL = "https://www.marinespecies.org/aphia.php?p=taxdetails&id="
UNVERIFIED = ("error", "exclude", "include")  # what a campaign does with an unverified label
STATUSES = ("verified", "unverified", "not_a_taxon")
HEADER = (
    "# aquaflow taxonomy table: model label -> WoRMS taxon (see README, 'Publishing to OBIS').\n"
    "# status: verified (AphiaID checked in WoRMS on `checked`) | unverified (no scientificNameID is\n"
    "# written) | not_a_taxon (excluded from occurrences).\n"
    "# Fill: python -m aquaflow.standards.taxonomy fill <this file>   (needs internet)\n"
)


class TaxonomyError(ValueError):
    """A taxonomy table is malformed or lacks a label; the message names the file."""


@dataclass(frozen=True)
class Taxon:
    label: str
    scientific_name: str = ""
    aphia_id: int | None = None
    rank: str = ""
    kingdom: str = ""
    status: str = "unverified"
    checked: str = ""
    note: str = ""
    source: str = ""  # where the AphiaID was checked (a URL)

    @property
    def is_taxon(self) -> bool:
        return self.status != "not_a_taxon"

    @property
    def lsid(self) -> str:
        """WoRMS LSID, only for verified rows (an unverified AphiaID is never published)."""
        return f"{LSID_PREFIX}{self.aphia_id}" if self.status == "verified" and self.aphia_id else ""


def _row_taxon(row: dict[str, str], where: str) -> Taxon:
    status = (row.get("status") or "").strip()
    if status not in STATUSES:
        raise TaxonomyError(f"{where}: status {status!r} is not one of {list(STATUSES)}")
    raw_id = (row.get("aphiaID") or "").strip()
    if raw_id and not raw_id.isdigit():
        raise TaxonomyError(f"{where}: aphiaID {raw_id!r} is not a positive integer")
    taxon = Taxon(
        label=(row.get("label") or "").strip(),
        scientific_name=(row.get("scientificName") or "").strip(),
        aphia_id=int(raw_id) if raw_id else None,
        rank=(row.get("taxonRank") or "").strip(),
        kingdom=(row.get("kingdom") or "").strip(),
        status=status,
        checked=(row.get("checked") or "").strip(),
        source=(row.get("source") or "").strip(),
        note=(row.get("note") or "").strip(),
    )
    if not taxon.label:
        raise TaxonomyError(f"{where}: empty label")
    if taxon.status == "not_a_taxon" and taxon.scientific_name:
        raise TaxonomyError(f"{where}: a not_a_taxon row must have no scientificName")
    if taxon.is_taxon and not taxon.scientific_name:
        raise TaxonomyError(f"{where}: label {taxon.label!r} has no scientificName (or status not_a_taxon)")
    if taxon.status == "verified" and not taxon.aphia_id:
        raise TaxonomyError(f"{where}: a verified row needs its aphiaID")
    return taxon


def read_table(path: str | Path) -> dict[str, Taxon]:
    """Parse and check a taxonomy table; label -> Taxon."""
    path = Path(path)
    if not path.is_file():
        raise TaxonomyError(
            f"taxonomy table {path} does not exist; create it with "
            f"`python -m aquaflow.standards.taxonomy init {path} <classes.txt>` (README: Publishing to OBIS)"
        )
    lines = [
        ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")
    ]
    reader = csv.DictReader(lines, delimiter="\t")
    missing = [c for c in COLUMNS[:6] if c not in (reader.fieldnames or [])]
    if missing:
        raise TaxonomyError(f"{path}: missing column(s) {missing} (want {COLUMNS})")
    out: dict[str, Taxon] = {}
    for i, row in enumerate(reader, start=2):
        taxon = _row_taxon(row, f"{path} row {i}")
        if taxon.label in out:
            raise TaxonomyError(f"{path} row {i}: label {taxon.label!r} appears twice")
        out[taxon.label] = taxon
    return out


def write_table(taxa: Iterable[Taxon], path: str | Path) -> None:
    from aquaflow.io import atomic_path

    rows = [
        [
            t.label,
            t.scientific_name,
            str(t.aphia_id or ""),
            t.rank,
            t.kingdom,
            t.status,
            t.checked,
            t.source,
            t.note,
        ]
        for t in taxa
    ]
    text = HEADER + "\t".join(COLUMNS) + "\n" + "".join("\t".join(r) + "\n" for r in rows)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def resolve(
    labels: Iterable[str], table: dict[str, Taxon], path: str | Path = "taxonomy table"
) -> dict[str, Taxon]:
    """The row of every label; raises naming the table and the labels it lacks."""
    labels = sorted(set(labels))
    missing = [lb for lb in labels if lb not in table]
    if missing:
        raise TaxonomyError(
            f"{path}: no row for model label(s) {missing}; add them (status unverified is allowed)"
        )
    return {lb: table[lb] for lb in labels}


def check_labels(
    labels: Iterable[str], table: dict[str, Taxon], unverified: str, path: str | Path = "taxonomy table"
) -> dict[str, Taxon]:
    """The rows of a campaign's labels; raises on a label whose AphiaID is not verified unless the
    use case opts in to leaving it out or publishing it without an LSID (`export.dwca.unverified`)."""
    if unverified not in UNVERIFIED:
        raise TaxonomyError(f"export.dwca.unverified {unverified!r} is not one of {list(UNVERIFIED)}")
    taxa = resolve(labels, table, path)
    todo = split_status(taxa)["unverified"]
    if todo and unverified == "error":
        raise TaxonomyError(
            f"{path}: label(s) {todo} of this campaign have no verified AphiaID; verify them "
            f"(`python -m aquaflow.standards.taxonomy fill {path}`, or by hand with a source) or set "
            f"export.dwca.unverified: exclude (leave them out) or include (publish without scientificNameID)"
        )
    return taxa


def split_status(taxa: dict[str, Taxon]) -> dict[str, list[str]]:
    """Labels by status, for the export report."""
    return {s: sorted(lb for lb, t in taxa.items() if t.status == s) for s in STATUSES}


# --- filling the table from WoRMS (network; never called by the workflow or the tests) ------------

Matcher = Callable[[list[str]], list[list[dict]]]


def fill(taxa: dict[str, Taxon], match: Matcher, today: str | None = None) -> dict[str, Taxon]:
    """Look every unverified row up by scientificName (default: the label) and mark exact, accepted
    matches verified. Ambiguous or fuzzy matches stay unverified with a note listing candidates."""
    today = today or dt.date.today().isoformat()
    todo = [t for t in taxa.values() if t.status == "unverified"]
    results = match([t.scientific_name or t.label for t in todo]) if todo else []
    out = dict(taxa)
    for taxon, records in zip(todo, results, strict=True):
        records = records or []
        exact = [r for r in records if r.get("match_type") == "exact" and r.get("status") == "accepted"]
        if len(exact) == 1:
            r = exact[0]
            out[taxon.label] = replace(
                taxon,
                scientific_name=r["scientificname"],
                aphia_id=int(r["AphiaID"]),
                rank=r.get("rank") or taxon.rank,
                kingdom=r.get("kingdom") or taxon.kingdom,
                status="verified",
                checked=today,
                source=f"{WORMS_URL}{int(r['AphiaID'])}",
                note=taxon.note,
            )
        else:
            cands = ", ".join(
                f"{r.get('scientificname')} {r.get('AphiaID')} ({r.get('match_type')}, {r.get('status')})"
                for r in records[:5]
            )
            out[taxon.label] = replace(taxon, note=f"WoRMS {today}: {cands or 'no match'}; check by hand")
    return out


def labels_from(path: str | Path) -> list[str]:
    """Class labels from a model_card.json (`classes`) or a text file (one per line)."""
    path = Path(path)
    if path.suffix == ".json":
        return list(json.loads(path.read_text())["classes"])
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m aquaflow.standards.taxonomy", description=__doc__.split("\n")[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_init = sub.add_parser("init", help="new table, one unverified row per class label")
    p_init.add_argument("table")
    p_init.add_argument("classes", help="classes.txt (one label per line) or model_card.json")
    p_fill = sub.add_parser("fill", help="look unverified rows up in WoRMS with pyworms (needs internet)")
    p_fill.add_argument("table")
    p_check = sub.add_parser(
        "check", help="parse the table and print labels by status; with --labels, fail on unverified ones"
    )
    p_check.add_argument("table")
    p_check.add_argument("--labels", help="a campaign's labels: classes.txt or model_card.json")
    p_check.add_argument("--unverified", choices=UNVERIFIED, default="error")
    args = ap.parse_args(argv)
    if args.cmd == "init":
        if Path(args.table).exists():
            ap.error(f"{args.table} exists; edit it or use `fill`")
        write_table((Taxon(label=lb, scientific_name=lb) for lb in labels_from(args.classes)), args.table)
    elif args.cmd == "fill":
        import pyworms

        table = read_table(args.table)
        write_table(fill(table, pyworms.aphiaRecordsByMatchNames).values(), args.table)
    table = read_table(args.table)
    if getattr(args, "labels", None):
        try:
            table = check_labels(labels_from(args.labels), table, args.unverified, args.table)
        except TaxonomyError as e:
            print(e, file=sys.stderr)
            return 1
    json.dump(split_status(table), sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
