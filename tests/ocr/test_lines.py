"""dawnet.ocr.lines: the line-data helpers of dawnet train, eval and the bench, with library errors."""

import ast
import pathlib

import pytest

import dawnet
from dawnet.ocr.data.specs import spec
from dawnet.ocr.lines import data_spec, lm_texts, load_line_data, read_line_records, spec_charset


def test_bad_data_gets_library_errors_that_name_the_fix(tmp_path):
    with pytest.raises(LookupError, match=r"^'no/such' is neither an existing file/folder nor a data spec: "):
        data_spec("no/such")
    with pytest.raises(ValueError, match=r"^spec pages-v1 holds pages, not text lines: recognizers train on "
                                         r"'lines' or 'digits' specs \(pages are for the detector\)$"):
        spec_charset(spec("pages-v1"))
    with pytest.raises(FileNotFoundError, match=r"^cannot read line data from "):
        read_line_records(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"^cannot read line data from "):
        load_line_data(str(tmp_path), 32)
    with pytest.raises(ValueError, match=r"^digits-v1 has no LM text \(digit strings are random\): train the "
                                         r"LM on a lines spec$"):
        lm_texts("digits-v1")
    assert spec_charset(spec("digits-v1")).chars == "0123456789"


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_nothing_outside_the_cli_imports_dawnet_commands():
    root = pathlib.Path(dawnet.__file__).parent
    offenders = sorted(str(p.relative_to(root.parent)) for p in root.rglob("*.py")
                       if p.parent.name != "commands" and p.name != "cli.py"
                       and any(n == "dawnet.commands" or n.startswith("dawnet.commands.") for n in _imports(p)))
    assert offenders == []
