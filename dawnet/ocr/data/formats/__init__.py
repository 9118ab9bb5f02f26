"""Readers and writers of line and page data: folders, TSV, IAM, PAGE XML, ALTO, LMDB, YOLO, COCO.

Every line reader returns a :class:`LineSet` of :class:`LineRecord` (text + where the pixels are);
malformed input raises :class:`FormatError` naming the file and line/element, or, with
``on_error="skip"``, is skipped and listed in ``LineSet.skipped``. :func:`read_lines` picks the
reader from the path.
"""

from __future__ import annotations

import os
from pathlib import Path

from dawnet.ocr.data.formats.detection import CLASSES, coco_dict, read_coco, read_yolo, write_coco, write_yolo_labels
from dawnet.ocr.data.formats.lines import read_folder, read_iam_lines, read_tsv, write_folder, write_tsv
from dawnet.ocr.data.formats.lmdb_format import read_lmdb, write_lmdb
from dawnet.ocr.data.formats.records import FormatError, LineRecord, LineSet, PageRecord, save_image
from dawnet.ocr.data.formats.xml import read_alto, read_page_xml

__all__ = ["FormatError", "LineRecord", "LineSet", "PageRecord", "read_lines", "read_folder", "read_tsv",
           "read_iam_lines", "read_page_xml", "read_alto", "read_lmdb", "read_yolo", "read_coco", "write_folder",
           "write_tsv", "write_lmdb", "write_yolo_labels", "write_coco", "coco_dict", "save_image", "CLASSES",
           "LINE_FORMATS"]

LINE_FORMATS = ("folder", "tsv", "iam", "page", "alto", "lmdb")


def _sniff_xml(path: Path) -> str:
    head = path.read_bytes()[:2000].decode("utf-8", "replace")
    if "<alto" in head or "alto" in head.split(">", 2)[-1][:300]:
        return "alto"
    return "page"


def read_lines(path: str | os.PathLike, format: str = "auto", on_error: str = "raise", **kwargs) -> LineSet:
    """Read line data, choosing the reader from ``format`` or, with ``"auto"``, from the path:
    ``*.tsv`` -> TSV, ``lines.txt`` -> IAM, ``*.xml`` -> PAGE or ALTO (sniffed), a folder with
    ``data.mdb`` -> LMDB, a folder of XML files -> PAGE/ALTO, another folder -> png + gt.txt.
    """
    p = Path(path)
    if format == "auto":
        if p.is_dir():
            if (p / "data.mdb").is_file():
                format = "lmdb"
            elif (p / "labels.tsv").is_file():
                p, format = p / "labels.tsv", "tsv"
            elif any(p.glob("*.xml")) and not any(p.rglob("*.gt.txt")):
                format = _sniff_xml(next(iter(sorted(p.glob("*.xml")))))
            else:
                format = "folder"
        elif p.suffix.lower() in (".tsv", ".tab"):
            format = "tsv"
        elif p.name == "lines.txt":
            format = "iam"
        elif p.suffix.lower() == ".xml" and p.is_file():
            format = _sniff_xml(p)
        elif not p.exists():
            raise FileNotFoundError(f"line data not found: {p}")
        else:
            raise ValueError(f"cannot tell the format of {p}: give a folder of png + gt.txt, a .tsv, an IAM "
                             "lines.txt, a PAGE/ALTO .xml or an LMDB folder")
    readers = {"folder": read_folder, "tsv": read_tsv, "iam": read_iam_lines, "page": read_page_xml,
               "alto": read_alto, "lmdb": read_lmdb}
    if format not in readers:
        raise ValueError(f"unknown line format {format!r}; choose one of {LINE_FORMATS} or 'auto'")
    return readers[format](p, on_error=on_error, **kwargs)
