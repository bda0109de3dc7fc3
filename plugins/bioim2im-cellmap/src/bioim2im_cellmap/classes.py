"""The CellMap classes: which are scored as instances, and which can never overlap.

Organelles are annotated at two levels: parts (``mito_mem``, ``mito_lum``, ...) and wholes made of
parts (``mito``). Two classes can share a voxel when one is part of the other or they share a part
(``er`` and ``nuc`` share the nuclear envelope); otherwise they exclude each other (``mito`` and
``er``), which is what mutual exclusion uses: where an annotated class is present, every class it
excludes is known to be absent, even in a crop that does not annotate it.

The table below is the challenge's class table (``classes.csv`` of the challenge toolbox) written
as wholes and their parts. A class not in the table excludes nothing. A table in the toolbox's
own format (rows ``name,id,"ids of its parts"``) can be read with :func:`read_class_table`.
"""

from __future__ import annotations

import csv
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from bioim2im.errors import UserError
from bioim2im.userfiles import MAX_TABLE_BYTES, read_text

INSTANCE_CLASSES = frozenset(
    {"nuc", "vim", "ves", "endo", "lyso", "ld", "perox", "mito", "np", "mt", "cell", "instance"}
)
"""Classes the challenge scores as instances (connected components); the others as masks."""

_NUCLEUS = ("ne_mem", "ne_lum", "np_out", "np_in", "hchrom", "nhchrom", "echrom", "nechrom")
_CELL_PARTS = (
    "pm",
    *("mito_mem", "mito_lum", "mito_ribo", "golgi_mem", "golgi_lum", "ves_mem", "ves_lum"),
    *("endo_mem", "endo_lum", "lyso_mem", "lyso_lum", "ld_mem", "ld_lum", "er_mem", "er_lum"),
    *("eres_mem", "eres_lum", *_NUCLEUS, "nucpl", "nucleo", "mt_out", "cent", "cent_dapp"),
    *("cent_sdapp", "ribo", "cyto", "mt_in", "vim", "glyco", "perox_mem", "perox_lum"),
    *("isg_mem", "isg_lum", "isg_ins", "actin", "tbar"),
)

PARTS: dict[str, tuple[str, ...]] = {
    "nuc": (*_NUCLEUS, "nucpl", "nucleo"),
    "golgi": ("golgi_mem", "golgi_lum"),
    "ves": ("ves_mem", "ves_lum"),
    "endo": ("endo_mem", "endo_lum"),
    "lyso": ("lyso_mem", "lyso_lum"),
    "ld": ("ld_mem", "ld_lum"),
    "eres": ("eres_mem", "eres_lum"),
    "perox": ("perox_mem", "perox_lum"),
    "mito": ("mito_mem", "mito_lum", "mito_ribo"),
    "er": ("er_mem", "er_lum", "eres_mem", "eres_lum", "ne_mem", "ne_lum", "np_out", "np_in"),
    "ne": ("ne_mem", "ne_lum", "np_out", "np_in"),
    "np": ("np_out", "np_in"),
    "chrom": ("hchrom", "nhchrom", "echrom", "nechrom"),
    "mt": ("mt_out", "mt_in"),
    "isg": ("isg_mem", "isg_lum", "isg_ins"),
    "cell": _CELL_PARTS,
    "er_mem_all": ("er_mem", "eres_mem", "ne_mem"),
    "ne_mem_all": ("ne_mem", "np_out", "np_in"),
    "cent_all": ("cent", "cent_dapp", "cent_sdapp"),
    "chloroplast": ("chloroplast_mem", "chloroplast_lum", "chloroplast_sg"),
    "vacuole": ("vacuole_mem", "vacuole_lum"),
}
"""Each whole class and the part classes it is made of."""

KNOWN_CLASSES = frozenset(
    {
        *(name for parts in PARTS.values() for name in parts),
        *PARTS,
        *("ecs", "rbc", "bm", "plasmodesmata", "chloroplast_mem", "chloroplast_lum"),
    }
)


def _covers(parts: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    names = set(parts) | {p for ps in parts.values() for p in ps}
    return {name: {name, *parts.get(name, ())} for name in names}


def exclusions(
    classes: Collection[str], parts: Mapping[str, Iterable[str]] | None = None
) -> dict[str, set[str]]:
    """For each of ``classes``, the other ``classes`` it can never overlap.

    ``parts`` is the table of wholes and their parts (default :data:`PARTS`, with every class of
    :data:`KNOWN_CLASSES`); classes absent from it exclude nothing.
    """
    covers = _covers(PARTS if parts is None else parts)
    if parts is None:
        covers.update({name: {name} for name in KNOWN_CLASSES - set(covers)})
    result: dict[str, set[str]] = {}
    for a in classes:
        result[a] = {
            b
            for b in classes
            if b != a and a in covers and b in covers and not covers[a] & covers[b]
        }
    return result


def read_class_table(path: str | Path) -> dict[str, tuple[str, ...]]:
    """A class table in the toolbox's format (``name,id,"part ids"`` rows) as wholes -> parts."""
    path = Path(path)
    try:
        text = read_text(path, what="class table", limit=MAX_TABLE_BYTES)
        rows = list(csv.reader(text.splitlines()))
    except OSError as exc:
        raise UserError(f"cannot read the class table {path}: {exc}") from None
    names: dict[int, str] = {}
    part_ids: dict[str, list[int]] = {}
    for number, row in enumerate(rows, start=1):
        if not row or not row[0].strip():
            continue
        try:
            name, ident = row[0].strip(), int(row[1])
            ids = [int(i) for i in (row[2] if len(row) > 2 else "").split(",") if i.strip()]
        except (IndexError, ValueError):
            raise UserError(
                f'{path}, line {number}: expected name,id,"part ids" (e.g. mito,50,"3,4,5"), '
                f"got {','.join(row)}"
            ) from None
        names[ident] = name
        part_ids[name] = ids
    table: dict[str, tuple[str, ...]] = {}
    for name, ids in part_ids.items():
        unknown = [i for i in ids if i not in names]
        if unknown:
            raise UserError(f"{path}: class '{name}' lists unknown part ids {unknown}")
        table[name] = tuple(names[i] for i in ids)
    return table
