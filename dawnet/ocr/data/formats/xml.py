"""PAGE XML and ALTO: text lines (polygon or box, baseline, transcription) cut from the page image.

Parsed with defusedxml with DTDs forbidden, so entity-expansion ("billion laughs"), external
entities and DTD retrieval are refused with an error instead of being expanded. Namespaces are
matched by local name, so every PAGE (2010-2019) and ALTO (v2-v4) version reads the same way.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import defusedxml
import defusedxml.ElementTree as DET

from dawnet.ocr.charset import normalize
from dawnet.ocr.data.formats.records import FormatError, LineRecord, LineSet, Problems, open_header

__all__ = ["read_page_xml", "read_alto", "parse_xml"]


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def parse_xml(path: str | os.PathLike):
    """The root element of ``path``; malformed XML and entity/DTD tricks raise :class:`FormatError`."""
    try:
        return DET.parse(str(path), forbid_dtd=True, forbid_entities=True, forbid_external=True).getroot()
    except DET.ParseError as e:
        line, col = getattr(e, "position", (0, 0))
        raise FormatError(f"{path}:{line}:{col}: malformed XML: {e}") from None
    except defusedxml.DefusedXmlException as e:
        raise FormatError(f"{path}: refused: the XML declares a DTD or entities ({type(e).__name__}); "
                          "PAGE and ALTO need neither. Remove the <!DOCTYPE> block") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"XML file not found: {path}") from None


def _points(s: str, where: str) -> list[tuple[float, float]]:
    nums = [float(v) for v in re.split(r"[\s,]+", s.strip()) if v]
    if len(nums) < 4 or len(nums) % 2:
        raise FormatError(f"{where}: points must be 'x,y x,y ...' with at least 2 points, got {s[:60]!r}")
    return list(zip(nums[0::2], nums[1::2]))


def _children(el, name: str):
    return [c for c in el if _local(c.tag) == name]


def _iter(el, name: str):
    return (c for c in el.iter() if _local(c.tag) == name)


def _page_text(line, where: str) -> str | None:
    equivs = _children(line, "TextEquiv")
    if equivs:
        # several TextEquivs = alternatives; the lowest @index is the primary one
        equivs.sort(key=lambda e: int(e.get("index", "0") or 0))
        uni = _children(equivs[0], "Unicode")
        return (uni[0].text or "") if uni else ""
    words = []
    for w in _children(line, "Word"):
        we = _children(w, "TextEquiv")
        uni = _children(we[0], "Unicode") if we else []
        if uni and uni[0].text:
            words.append(uni[0].text)
    return " ".join(words) if words else None


def _image(xml_path: Path, name: str | None, where: str, problems: Problems, check: bool) -> str | None:
    if not name:
        problems(where, "no page image named in the XML (PAGE: Page/@imageFilename, ALTO: fileName)")
        return None
    img = name if os.path.isabs(name) else str(xml_path.parent / name)
    if check and (why := open_header(img)):
        problems(where, f"{why}: {img}")
        return None
    return img


def read_page_xml(paths: str | os.PathLike | list, on_error: str = "raise", check_images: bool = True) -> LineSet:
    """PAGE XML files (a file, a list, or a folder of ``*.xml``): one record per ``TextLine``.

    The line polygon is ``Coords/@points`` (or the old ``Coords/Point`` children), its text the
    line's primary ``TextEquiv/Unicode`` (else its words joined by spaces). A line without
    coordinates or text is an error naming the file and the line id.
    """
    problems = Problems(on_error)
    records = []
    files = _xml_files(paths)
    for xml in files:
        root = parse_xml(xml)
        pages = list(_iter(root, "Page"))
        if not pages:
            problems(str(xml), "no <Page> element: is this PAGE XML?")
            continue
        for page in pages:
            img = _image(xml, page.get("imageFilename"), str(xml), problems, check_images)
            if img is None:
                continue
            for k, line in enumerate(_iter(page, "TextLine")):
                where = f"{xml}: TextLine id={line.get('id', '?')} (#{k + 1})"
                coords = _children(line, "Coords")
                try:
                    if coords and coords[0].get("points"):
                        poly = _points(coords[0].get("points"), where)
                    elif coords and _children(coords[0], "Point"):
                        poly = [(float(p.get("x")), float(p.get("y"))) for p in _children(coords[0], "Point")]
                    else:
                        problems(where, "no Coords/@points: the line has no region")
                        continue
                    bl = _children(line, "Baseline")
                    baseline = _points(bl[0].get("points", ""), where) if bl and bl[0].get("points") else None
                except (FormatError, ValueError, TypeError) as e:
                    problems(where, f"bad coordinates: {e}")
                    continue
                text = _page_text(line, where)
                text = normalize(text).strip() if text else ""
                if not text:
                    problems(where, "empty transcription")
                    continue
                records.append(LineRecord(text=text, path=img, polygon=poly, baseline=baseline, source=where,
                                          meta={"id": line.get("id")}))
    return LineSet(records, problems.skipped, source=", ".join(map(str, files[:3])) + ("..." if len(files) > 3
                                                                                     else ""))


def read_alto(paths: str | os.PathLike | list, on_error: str = "raise", check_images: bool = True,
              image: str | None = None) -> LineSet:
    """ALTO files: one record per ``TextLine`` (box from HPOS/VPOS/WIDTH/HEIGHT, or ``Shape/Polygon``),
    text = its ``String/@CONTENT`` joined by spaces (plus a trailing ``HYP``). The page image is
    ``sourceImageInformation/fileName`` unless ``image`` is given. Only pixel units are accepted.
    """
    problems = Problems(on_error)
    records = []
    files = _xml_files(paths)
    for xml in files:
        root = parse_xml(xml)
        if _local(root.tag) != "alto":
            problems(str(xml), f"root element is <{_local(root.tag)}>, not <alto>")
            continue
        unit = next((u.text for u in _iter(root, "MeasurementUnit")), "pixel") or "pixel"
        if unit.strip() != "pixel":
            problems(str(xml), f"MeasurementUnit {unit!r} is not supported: convert the file to pixel units")
            continue
        name = image or next((f.text for f in _iter(root, "fileName") if f.text), None)
        img = _image(xml, name.strip() if name else None, str(xml), problems, check_images)
        if img is None:
            continue
        for k, line in enumerate(_iter(root, "TextLine")):
            where = f"{xml}: TextLine ID={line.get('ID', '?')} (#{k + 1})"
            words = []
            for child in line:
                tag = _local(child.tag)
                if tag == "String" and child.get("CONTENT"):
                    words.append(child.get("CONTENT"))
                elif tag == "HYP" and words:
                    words[-1] += child.get("CONTENT", "-")
            text = normalize(" ".join(words)).strip()
            if not text:
                problems(where, "empty transcription")
                continue
            poly = None
            polys = [p for s in _children(line, "Shape") for p in _children(s, "Polygon")]
            try:
                if polys and polys[0].get("POINTS"):
                    poly = _points(polys[0].get("POINTS"), where)
                x, y = float(line.get("HPOS")), float(line.get("VPOS"))
                w, h = float(line.get("WIDTH")), float(line.get("HEIGHT"))
            except (TypeError, ValueError, FormatError) as e:
                if poly is None:
                    problems(where, f"no usable HPOS/VPOS/WIDTH/HEIGHT: {e}")
                    continue
                x = y = w = h = 0.0
            box = (int(x), int(y), int(round(x + w)), int(round(y + h))) if w > 0 and h > 0 else None
            if box is None and poly is None:
                problems(where, "line has zero width or height")
                continue
            records.append(LineRecord(text=text, path=img, box=box, polygon=poly, source=where,
                                      meta={"id": line.get("ID")}))
    return LineSet(records, problems.skipped, source=", ".join(map(str, files[:3])) + ("..." if len(files) > 3
                                                                                     else ""))


def _xml_files(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        p = Path(paths)
        if p.is_dir():
            files = sorted(p.rglob("*.xml"))
            if not files:
                raise FileNotFoundError(f"no .xml files under {p}")
            return files
        if not p.is_file():
            raise FileNotFoundError(f"XML file not found: {p}")
        return [p]
    return [Path(x) for x in paths]
