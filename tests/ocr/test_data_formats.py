"""Readers and writers: round trips through every format, and malformed input named or skipped and counted."""

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dawnet.ocr.data.formats import (
    FormatError,
    PageRecord,
    read_alto,
    read_coco,
    read_folder,
    read_iam_lines,
    read_lines,
    read_lmdb,
    read_page_xml,
    read_tsv,
    read_yolo,
    write_coco,
    write_folder,
    write_lmdb,
    write_tsv,
    write_yolo_labels,
)

TEXTS = ["Hello world", "two  spaces kept", "caf\u00e9 12, 3.5!", "x"]


def line_image(i: int, w: int = 80, h: int = 24) -> Image.Image:
    a = np.full((h, w + 7 * i), 230, np.uint8)
    a[6:18, 5:5 + 10 * (i + 1)] = 20 + i
    return Image.fromarray(a)


def samples():
    return [(line_image(i), t) for i, t in enumerate(TEXTS)]


def assert_same(records, expected):
    assert [r.text for r in records] == [t for _, t in expected]
    for r, (im, _) in zip(records, expected):
        assert np.array_equal(np.asarray(r.load()), np.asarray(im))


def test_folder_round_trip(tmp_path):
    write_folder(samples(), tmp_path)
    ls = read_folder(tmp_path)
    assert_same(ls, samples())
    assert ls.skipped == [] and read_lines(tmp_path).texts == TEXTS


def test_tsv_round_trip_header_and_extra_columns(tmp_path):
    tsv = write_tsv(samples(), tmp_path)
    assert_same(read_tsv(tsv), samples())
    assert read_lines(tmp_path).texts == TEXTS  # a folder holding labels.tsv
    (tmp_path / "h.tsv").write_text("path\ttext\nimages/000000.png\tHi\tfontA\n", encoding="utf-8")
    r = read_tsv(tmp_path / "h.tsv")
    assert r.texts == ["Hi"] and r[0].meta["columns"] == ["fontA"]


def test_lmdb_round_trip(tmp_path):
    pytest.importorskip("lmdb")
    assert write_lmdb(samples(), tmp_path / "db") == len(TEXTS)
    ls = read_lmdb(tmp_path / "db")
    assert_same(ls, samples())
    assert read_lines(tmp_path / "db").texts == TEXTS


def test_iam_lines(tmp_path):
    ids = ["a01-000u-00", "a01-000u-01", "b02-013-03"]
    for k, line_id in enumerate(ids):
        a, b = line_id.split("-")[:2]
        d = tmp_path / "lines" / a / f"{a}-{b}"
        d.mkdir(parents=True, exist_ok=True)
        line_image(k).save(d / f"{line_id}.png")
    (tmp_path / "ascii").mkdir()
    txt = tmp_path / "ascii" / "lines.txt"
    txt.write_text("#--- IAM lines ---\n"
                   "a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop|Mr.|Gaitskell\n"
                   "a01-000u-01 err 156 19 395 932 1850 105 nominating|any|more|Labour\n"
                   "b02-013-03 ok 180 5 300 1000 1400 90 Hi|!\n", encoding="utf-8")
    ls = read_iam_lines(txt)
    assert ls.texts == ["A MOVE to stop Mr. Gaitskell", "nominating any more Labour", "Hi !"]
    assert ls[1].meta["status"] == "err"
    assert np.array_equal(np.asarray(ls[2].load()), np.asarray(line_image(2)))
    assert read_iam_lines(txt, skip_err=True).texts == ["A MOVE to stop Mr. Gaitskell", "Hi !"]
    assert read_lines(txt).texts == ls.texts


def make_page(tmp_path):
    page = Image.new("L", (300, 200), 255)
    d = ImageDraw.Draw(page)
    d.rectangle((20, 30, 119, 49), fill=10)  # line 1: 100 x 20
    d.rectangle((40, 100, 239, 129), fill=60)  # line 2: 200 x 30
    page.save(tmp_path / "page.png")


PAGE_XML = """<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15">
 <Page imageFilename="page.png" imageWidth="300" imageHeight="200">
  <TextRegion id="r1"><Coords points="0,0 299,0 299,199 0,199"/>
   <TextLine id="l1"><Coords points="20,30 119,30 119,49 20,49"/><Baseline points="20,45 119,45"/>
    <TextEquiv index="1"><Unicode>second choice</Unicode></TextEquiv>
    <TextEquiv index="0"><Unicode>First line</Unicode></TextEquiv></TextLine>
   <TextLine id="l2"><Coords points="40,100 239,100 239,129 40,129"/>
    <Word id="w1"><Coords points="40,100 90,100 90,129 40,129"/><TextEquiv><Unicode>Second</Unicode></TextEquiv></Word>
    <Word id="w2"><Coords points="95,100 239,100 239,129 95,129"/><TextEquiv><Unicode>line</Unicode></TextEquiv></Word>
   </TextLine>
  </TextRegion></Page></PcGts>"""

ALTO_XML = """<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#">
 <Description><MeasurementUnit>pixel</MeasurementUnit>
  <sourceImageInformation><fileName>page.png</fileName></sourceImageInformation></Description>
 <Layout><Page ID="p1" WIDTH="300" HEIGHT="200"><PrintSpace><TextBlock ID="b1">
  <TextLine ID="t1" HPOS="20" VPOS="30" WIDTH="100" HEIGHT="20">
   <String CONTENT="First"/><SP/><String CONTENT="li"/><HYP CONTENT="-"/></TextLine>
  <TextLine ID="t2" HPOS="40" VPOS="100" WIDTH="200" HEIGHT="30"><String CONTENT="Second"/><SP/>
   <String CONTENT="line"/></TextLine>
 </TextBlock></PrintSpace></Page></Layout></alto>"""


def test_page_xml_lines_are_cropped_from_the_page(tmp_path):
    make_page(tmp_path)
    (tmp_path / "page.xml").write_text(PAGE_XML, encoding="utf-8")
    ls = read_page_xml(tmp_path / "page.xml")
    assert ls.texts == ["First line", "Second line"]  # primary TextEquiv (index 0), then words joined
    assert ls[0].baseline == [(20.0, 45.0), (119.0, 45.0)]
    a, b = np.asarray(ls[0].load()), np.asarray(ls[1].load())
    assert a.shape == (20, 100) and (a == 10).all()
    assert b.shape == (30, 200) and (b == 60).all()
    assert read_lines(tmp_path / "page.xml").texts == ls.texts


def test_alto_lines(tmp_path):
    make_page(tmp_path)
    (tmp_path / "alto.xml").write_text(ALTO_XML, encoding="utf-8")
    ls = read_alto(tmp_path / "alto.xml")
    assert ls.texts == ["First li-", "Second line"]
    assert np.asarray(ls[1].load()).shape == (30, 200) and (np.asarray(ls[1].load()) == 60).all()
    assert read_lines(tmp_path / "alto.xml").texts == ls.texts
    (tmp_path / "mm.xml").write_text(ALTO_XML.replace(">pixel<", ">mm10<"), encoding="utf-8")
    with pytest.raises(FormatError, match="mm10"):
        read_alto(tmp_path / "mm.xml")


def pages_fixture(tmp_path):
    (tmp_path / "images").mkdir()
    pages = []
    for i in range(2):
        path = tmp_path / "images" / f"p{i}.png"
        Image.new("L", (320 + 10 * i, 240), 255).save(path)
        pages.append(PageRecord(path=str(path), width=320 + 10 * i, height=240,
                                boxes=[(10.5, 20.25, 100.0, 40.0), (30.0, 60.0, 300.0, 90.5)][: i + 1],
                                texts=["first box", "second, box"][: i + 1], classes=[0] * (i + 1)))
    return pages


def test_yolo_round_trip(tmp_path):
    pages = pages_fixture(tmp_path)
    for p in pages:
        write_yolo_labels(p, tmp_path / "labels", tmp_path / "texts")
    back = read_yolo(tmp_path)
    assert len(back) == 2
    for a, b in zip(pages, back):
        assert b.texts == a.texts and b.classes == a.classes
        np.testing.assert_allclose(b.boxes, a.boxes, atol=0.01)


def test_coco_round_trip(tmp_path):
    pages = pages_fixture(tmp_path)
    path = write_coco(pages, tmp_path / "coco.json")
    data = json.loads(path.read_text())
    assert data["annotations"][0]["bbox"] == [10.5, 20.25, 89.5, 19.75]
    assert data["categories"][0]["id"] == 1
    back = read_coco(path)
    for a, b in zip(pages, back):
        assert b.texts == a.texts and b.path == a.path and (b.width, b.height) == (a.width, a.height)
        np.testing.assert_allclose(b.boxes, a.boxes, atol=0.01)


# ---------------------------------------------------------------- malformed input


def test_malformed_xml_names_file_and_line(tmp_path):
    make_page(tmp_path)
    bad = tmp_path / "bad.xml"
    bad.write_text(PAGE_XML.replace("</TextRegion>", "</Oops>"), encoding="utf-8")
    with pytest.raises(FormatError, match=r"bad\.xml:\d+:\d+: malformed XML"):
        read_page_xml(bad)


@pytest.mark.parametrize("attack", [
    '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>',
    '<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
])
def test_entity_attacks_are_refused(tmp_path, attack):
    make_page(tmp_path)
    evil = tmp_path / "evil.xml"
    body = PAGE_XML.split("\n", 1)[1].replace("First line", "&lol2;" if "lol" in attack else "&xxe;")
    evil.write_text('<?xml version="1.0"?>\n' + attack + "\n" + body, encoding="utf-8")
    with pytest.raises(FormatError, match="refused"):
        read_page_xml(evil)


def test_missing_image_empty_text_and_unreadable_image(tmp_path):
    write_folder(samples(), tmp_path)
    (tmp_path / "000001.png").unlink()  # transcription left without its image
    (tmp_path / "000002.gt.txt").write_text("   \n", encoding="utf-8")  # empty transcription
    (tmp_path / "000003.png").write_bytes(b"this is not a png")  # unreadable
    with pytest.raises(FormatError, match="000002.gt.txt:1: empty transcription"):
        read_folder(tmp_path)
    ls = read_folder(tmp_path, on_error="skip")
    assert ls.texts == ["Hello world"]
    reasons = sorted(why.split(":")[0] for _, why in ls.skipped)
    assert reasons == ["empty transcription", "transcription without an image", "unreadable image"]
    assert "3 lines" not in ls.summary() and "1 lines" in ls.summary()


def test_tsv_errors_name_the_line(tmp_path):
    write_tsv(samples(), tmp_path)
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("images/000000.png\tok\nno tab here\nimages/missing.png\tgone\nimages/000001.png\t\n",
                   encoding="utf-8")
    with pytest.raises(FormatError, match=r"bad\.tsv:2: expected"):
        read_tsv(tsv)
    ls = read_tsv(tsv, on_error="skip")
    assert ls.texts == ["ok"]
    assert [w.rsplit(":", 1)[1] for w, _ in ls.skipped] == ["2", "3", "4"]
    assert "image not found" in ls.skipped[1][1]


def test_page_xml_line_without_text_or_image(tmp_path):
    make_page(tmp_path)
    x = tmp_path / "p.xml"
    x.write_text(PAGE_XML.replace("<Unicode>First line</Unicode>", "<Unicode></Unicode>"), encoding="utf-8")
    with pytest.raises(FormatError, match="TextLine id=l1.*empty transcription"):
        read_page_xml(x)
    assert read_page_xml(x, on_error="skip").texts == ["Second line"]
    (tmp_path / "page.png").unlink()
    with pytest.raises(FormatError, match="image not found"):
        read_page_xml(x)


def test_unreadable_image_at_load_names_the_file(tmp_path):
    write_folder(samples(), tmp_path)
    ls = read_folder(tmp_path)
    (tmp_path / "000000.png").write_bytes((tmp_path / "000000.png").read_bytes()[:40])  # truncated later
    with pytest.raises(FormatError, match="000000.png"):
        ls[0].load()


def test_yolo_and_coco_errors(tmp_path):
    pages = pages_fixture(tmp_path)
    for p in pages:
        write_yolo_labels(p, tmp_path / "labels")
    (tmp_path / "labels" / "p0.txt").write_text("0 0.5 0.5 0.2\n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"p0\.txt:1: expected 'class cx cy w h'"):
        read_yolo(tmp_path)
    assert len(read_yolo(tmp_path, on_error="skip")) == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [}', encoding="utf-8")
    with pytest.raises(FormatError, match=r"bad\.json:1:\d+: malformed JSON"):
        read_coco(bad)
    bad.write_text('{"images": []}', encoding="utf-8")
    with pytest.raises(FormatError, match="annotations"):
        read_coco(bad)


def test_lmdb_errors(tmp_path):
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(tmp_path / "db"))
    with env.begin(write=True) as txn:
        txn.put(b"num-samples", b"2")
        txn.put(b"label-000000001", b"fine")
        txn.put(b"image-000000001", b"garbage")
        txn.put(b"label-000000002", b"")
        txn.put(b"image-000000002", b"garbage")
    env.close()
    with pytest.raises(FormatError, match="unreadable image"):
        read_lmdb(tmp_path / "db")
    ls = read_lmdb(tmp_path / "db", on_error="skip")
    assert len(ls) == 0 and len(ls.skipped) == 2


# -- every format reads images through dawnet.images (issue 18 item 2) -------------------------------------


def as_16_bit(im: Image.Image) -> Image.Image:
    return Image.fromarray(np.asarray(im).astype(np.uint16) * 257)


def as_alpha_ink(im: Image.Image) -> Image.Image:
    """White colour everywhere, the line's ink only in alpha, on a transparent background."""
    a = np.asarray(im)
    return Image.fromarray(np.dstack([np.full_like(a, 255)] * 3 + [255 - a]), mode="RGBA")


@pytest.mark.parametrize("encode", [as_16_bit, as_alpha_ink])
def test_folder_tsv_and_lmdb_read_16_bit_and_alpha_lines_as_the_8_bit_original(encode, tmp_path):
    lines = samples()
    for i, (im, text) in enumerate(lines):
        encode(im).save(tmp_path / f"{i:06d}.png")
        (tmp_path / f"{i:06d}.gt.txt").write_text(text + "\n", encoding="utf-8")
    with Image.open(tmp_path / "000000.png") as im:
        assert np.asarray(im.convert("L")).std() == 0  # what the readers saw before: a blank line
    assert_same(read_folder(tmp_path), lines)
    (tmp_path / "labels.tsv").write_text("".join(f"{i:06d}.png\t{t}\n" for i, (_, t) in enumerate(lines)),
                                         encoding="utf-8")
    assert_same(read_tsv(tmp_path / "labels.tsv"), lines)
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(tmp_path / "db"))
    with env.begin(write=True) as txn:
        txn.put(b"num-samples", str(len(lines)).encode())
        for i, (_, text) in enumerate(lines, start=1):
            txn.put(f"image-{i:09d}".encode(), (tmp_path / f"{i - 1:06d}.png").read_bytes())
            txn.put(f"label-{i:09d}".encode(), text.encode())
    env.close()
    assert_same(read_lmdb(tmp_path / "db"), lines)


def test_page_xml_crops_lines_from_a_16_bit_page(tmp_path):
    make_page(tmp_path)
    as_16_bit(Image.open(tmp_path / "page.png")).save(tmp_path / "page.png")
    (tmp_path / "page.xml").write_text(PAGE_XML, encoding="utf-8")
    ls = read_page_xml(tmp_path / "page.xml")
    a, b = np.asarray(ls[0].load()), np.asarray(ls[1].load())
    assert a.shape == (20, 100) and (a == 10).all()
    assert b.shape == (30, 200) and (b == 60).all()
    page = PageRecord(path=str(tmp_path / "page.png"), width=300, height=200).load()
    assert page.mode == "L" and np.asarray(page)[40, 50] == 10 and np.asarray(page)[0, 0] == 255


def test_yolo_page_size_follows_exif_rotation(tmp_path):
    (tmp_path / "images").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 240 x 320, shown 320 x 240
    Image.new("L", (240, 320), 255).save(tmp_path / "images" / "p.png", exif=exif)
    (page,) = read_yolo(tmp_path)
    assert (page.width, page.height) == (320, 240) == page.load().size


def test_unreadable_image_reason_is_one_line(tmp_path):
    write_folder(samples(), tmp_path)
    (tmp_path / "000000.png").write_bytes(b"GIF89a-but-not-really")
    with pytest.raises(FormatError) as e:
        read_folder(tmp_path)
    assert str(e.value) == (f"{tmp_path / '000000.png'}: unreadable image: not an image file Pillow can read (it "
                            "starts b'GIF89a-b'); give a PNG, JPEG, TIFF, BMP, GIF or WebP file; fix or remove the "
                            "entry")


@pytest.mark.parametrize("junk", [b"", b"this is not an lmdb database" * 200])
def test_a_junk_data_mdb_is_a_one_line_error_naming_the_file_and_the_fix(junk, tmp_path):
    pytest.importorskip("lmdb")
    (tmp_path / "data.mdb").write_bytes(junk)
    for read in (read_lines, read_lmdb):
        with pytest.raises(FormatError, match=r"data\.mdb is not a readable LMDB database \(.+\); rebuild it with "
                                              r"write_lmdb, or move data\.mdb away so the folder is read as image "
                                              r"files$") as e:
            read(tmp_path)
        assert str(e.value).startswith(str(tmp_path / "data.mdb")) and "\n" not in str(e.value)


def test_messages_name_the_fix_not_only_a_python_argument(tmp_path):
    write_folder(samples(), tmp_path)
    (tmp_path / "000001.gt.txt").write_text(" \n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"000001\.gt\.txt:1: empty transcription; fix or remove the entry$"):
        read_folder(tmp_path)
    (tmp_path / "notes.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"cannot tell the format of .*notes\.csv: give a folder of png \+ gt\.txt, "
                                         r"a \.tsv, an IAM lines\.txt, a PAGE/ALTO \.xml or an LMDB folder$") as e:
        read_lines(tmp_path / "notes.csv")
    assert "format=" not in str(e.value)
