"""The pinned pool of handwriting fonts behind ``hw-lines-v2`` and ``pages-v2``: lock file, cache, fetch.

The pool is exactly two sources: the Debian handwriting font packages (``fonts.DEBIAN_HANDWRITING_FONTS``)
and every family of Google Fonts' *handwriting* category as Fontsource packages it on the npm registry
(``@fontsource/<id>``; the category list comes from ``google-font-metadata``'s ``data/google-fonts-v2.json``).

``fonts-lock.json`` (committed next to this module) pins every family: package, version, the tarball's
``integrity`` (the registry's sha512) and the sha256 of each font file used (the latin subset, regular 400
normal, plus one more weight or style of the same hand where the family has one). It also records each
family's hand class, split and, for families left out, the rule that excluded them.

Set-up (``make test``, ``make bench``, CI) runs :func:`fetch`, which downloads each pinned tarball once,
checks its integrity, extracts only the files used into the cache folder (``DAWNET_FONTS_DIR``, else
``$XDG_CACHE_HOME/dawnet/fonts``, else ``~/.cache/dawnet/fonts``) and checks their sha256. Nothing downloads
at run time: :func:`pool_fonts` raises :class:`FontPoolError` (one line, with the fixing command) when a
file is missing or differs. :func:`update_lock` rewrites the lock from the registry's current versions
(network at set-up only; it changes the pool, so it makes a new data version).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from dawnet.atomic import atomic_write_bytes, atomic_write_text
from dawnet.checksum import sha256_file

__all__ = ["LOCK_PATH", "FETCH_COMMAND", "FontPoolError", "cache_dir", "load_lock", "fetch", "verify_cache",
           "pool_fonts", "pool_families", "update_lock", "npm_registry", "HAND_CLASSES", "hand_class",
           "split_of", "SPLIT_SALT", "SPLIT_FRACTIONS", "CJK_SUBSETS", "is_pool_cache", "pool_record"]

LOCK_PATH = Path(__file__).with_name("fonts-lock.json")
FETCH_COMMAND = "scripts/fetch-fonts"  # what set-up runs; the one-line errors name it
MARKER = "dawnet-fonts.json"  # written into a fetched cache folder: lets --fonts DIR point at one
HAND_CLASSES = ("print", "cursive", "school")
SPLIT_SALT = "dawnet-fonts-v2"
SPLIT_FRACTIONS = {"test": 0.16, "val": 0.08}  # of each hand class, by hash; the rest trains
CJK_SUBSETS = ("chinese", "japanese", "korean", "hentaigana")
_METADATA_PACKAGE = "google-font-metadata"
_UA = {"User-Agent": "dawnet-fonts (+set-up)"}


class FontPoolError(FileNotFoundError):
    """A pinned font is missing from the cache or differs from the lock (the message says how to fix it).
    A FileNotFoundError, so callers that report missing assets report this one too."""


def cache_dir(fonts_dir: str | os.PathLike | None = None) -> Path:
    """The font cache folder: ``fonts_dir``, else ``$DAWNET_FONTS_DIR``, else the user cache dir."""
    if fonts_dir is not None:
        return Path(fonts_dir)
    env = os.environ.get("DAWNET_FONTS_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dawnet" / "fonts"


def is_pool_cache(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by :func:`fetch` (rather than a folder of a user's own fonts)."""
    return (Path(path) / MARKER).is_file()


def load_lock(path: str | os.PathLike | None = None) -> dict:
    """The lock file as a dict (see the module docstring)."""
    p = Path(path) if path is not None else LOCK_PATH
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FontPoolError(f"font lock file {p} not found. Fix: restore it from git "
                            f"(git checkout {p.name}) or regenerate it with {FETCH_COMMAND} --update-lock") from None
    except json.JSONDecodeError as e:
        raise FontPoolError(f"font lock file {p} is damaged ({e}). Fix: restore it from git") from None


def _rel(family: dict, name: str) -> str:
    return f"fontsource/{family['id']}/{family['version']}/{name}"


def _file_path(family: dict, f: dict, root: Path) -> str:
    if family["source"] == "debian":
        from dawnet.ocr.data.fonts import FONT_DIRS

        found = [os.path.join(d, f["path"]) for d in FONT_DIRS if os.path.isfile(os.path.join(d, f["path"]))]
        return found[0] if found else os.path.join(FONT_DIRS[0], f["path"])
    return str(root / _rel(family, f["name"]))


# -- the registry -------------------------------------------------------------------------------------------

def npm_registry() -> str:
    """The npm registry base URL: ``$npm_config_registry``, else what ``npm config get registry`` says
    (so mirrors and proxies configured for npm are honoured)."""
    env = os.environ.get("npm_config_registry") or os.environ.get("NPM_CONFIG_REGISTRY")
    if env:
        return env.rstrip("/") + "/"
    npm = shutil.which("npm")
    if npm is None:
        raise FontPoolError("npm is not installed, so the registry to fetch the pinned fonts from is unknown. "
                            "Fix: sudo apt-get install npm, or set npm_config_registry to the registry URL")
    out = subprocess.run([npm, "config", "get", "registry"], capture_output=True, text=True, timeout=60)
    url = out.stdout.strip()
    if out.returncode != 0 or not url.startswith("http"):
        raise FontPoolError(f"'npm config get registry' failed ({out.stderr.strip()[:200]}). "
                            "Fix: set npm_config_registry to the registry URL")
    return url.rstrip("/") + "/"


def _get(url: str, accept: str | None = None, tries: int = 3, missing_ok: bool = False) -> bytes | None:
    headers = dict(_UA)
    if accept:
        headers["Accept"] = accept
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=120) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            if e.code == 404 and missing_ok:
                return None
            if attempt == tries - 1:
                raise FontPoolError(f"cannot download {url}: {e}. Fix: check the network and rerun "
                                    f"{FETCH_COMMAND}") from None
            time.sleep(1 + attempt)
        except OSError as e:
            if attempt == tries - 1:
                raise FontPoolError(f"cannot download {url}: {e}. Fix: check the network and rerun "
                                    f"{FETCH_COMMAND}") from None
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def _tarball_url(registry: str, package: str, version: str) -> str:
    name = package.split("/")[-1]
    return f"{registry}{package}/-/{name}-{version}.tgz"


def _packument(registry: str, package: str) -> dict | None:
    """The package's abbreviated registry metadata (None when the registry has no such package)."""
    url = registry + urllib.parse.quote(package, safe="@")
    data = _get(url, accept="application/vnd.npm.install-v1+json", missing_ok=True)
    return None if data is None else json.loads(data)


def _check_integrity(data: bytes, integrity: str, what: str) -> None:
    algo, _, b64 = integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algo, data).digest()).decode()
    if digest != b64:
        raise FontPoolError(f"{what}: the downloaded tarball's {algo} differs from the lock. Fix: rerun "
                            f"{FETCH_COMMAND}; if it persists, the registry serves other bytes than when the "
                            "lock was made")


def _extract(data: bytes, members: list[str]) -> dict[str, bytes]:
    """``package/<member>`` files of a gzip tarball, by member path."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar.getmembers():
            rel = m.name.split("/", 1)[1] if "/" in m.name else m.name
            if rel in members and m.isfile():
                out[rel] = tar.extractfile(m).read()
    return out


# -- fetch and verify ---------------------------------------------------------------------------------------

def _wanted(lock: dict) -> list[dict]:
    """Fontsource families whose files set-up fetches: the kept ones and those excluded by a glyph rule
    (the tests re-check those rules on the real files); not the ones the metadata already rules out."""
    return [f for f in lock["families"] if f["source"] == "fontsource" and f["files"]
            and f.get("rule") != "metadata"]


def verify_cache(fonts_dir: str | os.PathLike | None = None, lock: dict | None = None) -> list[str]:
    """Pinned font files that are missing from the cache or whose sha256 differs (empty: all good)."""
    lock = lock or load_lock()
    root = cache_dir(fonts_dir)
    bad = []
    for fam in lock["families"]:
        if fam["source"] == "fontsource" and fam not in _wanted(lock):
            continue
        for f in fam["files"]:
            p = _file_path(fam, f, root)
            if not os.path.isfile(p) or sha256_file(p) != f["sha256"]:
                bad.append(p)
    return bad


def fetch(fonts_dir: str | os.PathLike | None = None, lock: dict | None = None, workers: int = 8,
          progress: bool = True) -> dict:
    """Download the pinned Fontsource packages whose files are not cached yet, extract only the files used,
    check integrity and sha256. Idempotent: a complete cache is a checksum pass. Returns a summary."""
    lock = lock or load_lock()
    root = cache_dir(fonts_dir)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    todo = []
    for fam in _wanted(lock):
        paths = [Path(_file_path(fam, f, root)) for f in fam["files"]]
        if not all(p.is_file() and sha256_file(p) == f["sha256"] for p, f in zip(paths, fam["files"])):
            todo.append(fam)
    registry = npm_registry() if todo else None

    def one(fam: dict) -> int:
        data = _get(_tarball_url(registry, fam["package"], fam["version"]))
        _check_integrity(data, fam["integrity"], f"{fam['package']}@{fam['version']}")
        got = _extract(data, [f"files/{f['name']}" for f in fam["files"]])
        for f in fam["files"]:
            blob = got.get(f"files/{f['name']}")
            if blob is None or hashlib.sha256(blob).hexdigest() != f["sha256"]:
                raise FontPoolError(f"{fam['package']}@{fam['version']}: files/{f['name']} is missing or differs "
                                    "from the lock. Fix: restore fonts-lock.json from git")
            atomic_write_bytes(root / _rel(fam, f["name"]), blob)
        return len(data)

    nbytes = 0
    if todo:
        if progress:
            print(f"dawnet fonts: fetching {len(todo)} pinned font packages into {root}", flush=True)
        with ThreadPoolExecutor(max(1, workers)) as ex:
            nbytes = sum(ex.map(one, todo))
    marker = {"format": "dawnet.fonts-cache", "lock_sha256": hashlib.sha256(
        json.dumps(lock, sort_keys=True).encode()).hexdigest()}
    atomic_write_text(root / MARKER, json.dumps(marker, indent=1) + "\n")
    files = sum(len(f["files"]) for f in _wanted(lock))
    return {"cache": str(root), "packages": len(_wanted(lock)), "fetched": len(todo), "files": files,
            "downloaded_bytes": nbytes, "seconds": round(time.perf_counter() - t0, 2)}


# -- the pool at run time -----------------------------------------------------------------------------------

def pool_families(lock: dict | None = None, split: str | None = None) -> list[dict]:
    """The lock's kept families (optionally of one split), in lock order (sorted by id)."""
    lock = lock or load_lock()
    return [f for f in lock["families"] if not f.get("excluded") and (split is None or f["split"] == split)]


def pool_fonts(families: list[str] | None = None, fonts_dir: str | os.PathLike | None = None,
               lock: dict | None = None, probe: str | None = None) -> list:
    """``FontInfo`` of every file of the kept families (``families``: their names; default all), with
    ``family`` set to the lock's family name. Raises :class:`FontPoolError` (one line naming the fix)
    when a file is missing from the cache or its sha256 differs from the lock. Nothing downloads.

    The covered characters are the lock's ``alphabet``, which :func:`update_lock` checked glyph by glyph
    on these very bytes (the sha256 proves it); a ``probe`` with other characters is checked afresh."""
    from dawnet.ocr.data.fonts import FontInfo, font_info

    lock = lock or load_lock()
    root = cache_dir(fonts_dir)
    kept = {f["family"]: f for f in pool_families(lock)}
    names = list(kept) if families is None else list(families)
    unknown = [n for n in names if n not in kept]
    if unknown:
        raise LookupError(f"font families not in the pool of {LOCK_PATH.name} (or excluded): {unknown[:5]}")
    checked = set(lock.get("alphabet", ""))
    out = []
    for name in names:
        fam = kept[name]
        for f in fam["files"]:
            p = _file_path(fam, f, root)
            if not os.path.isfile(p):
                fix = (f"sudo apt-get install {fam['package']}" if fam["source"] == "debian"
                       else f"run {FETCH_COMMAND}" + (f" --fonts {fonts_dir}" if fonts_dir else ""))
                raise FontPoolError(f"pinned font {fam['family']} ({fam['package']}) is missing: {p}. Fix: {fix}")
            sha = sha256_file(p)
            if sha != f["sha256"]:
                fix = (f"install {fam['package']} version {fam['version']} (the pool pins its bytes)"
                       if fam["source"] == "debian" else f"delete it and run {FETCH_COMMAND}")
                raise FontPoolError(f"font {p} differs from {LOCK_PATH.name} (sha256 {sha[:12]}, pinned "
                                    f"{f['sha256'][:12]}). Fix: {fix}")
            if probe is not None and set(probe) <= checked:
                style = f["style"] if fam["source"] == "debian" else f"{f['weight']} {f['style']}"
                out.append(FontInfo(path=p, family=fam["family"], style=style, version=fam["version"],
                                    sha256=sha, chars=frozenset(checked)))
            else:
                out.append(replace(font_info(p, probe), family=fam["family"]))
    return out


def pool_record(lock: dict | None = None) -> dict:
    """What a manifest records about the pool: the lock's sha256, its sources and rules, the excluded
    families with their reasons and the kept families' hand classes per split."""
    lock = lock or load_lock()
    kept = pool_families(lock)
    return {"lock": LOCK_PATH.name, "lock_sha256": sha256_file(LOCK_PATH), "category_source": lock["category_source"],
            "files_used": lock["files_used"], "split_rule": lock["split_rule"],
            "exclusion_rules": lock["exclusion_rules"],
            "excluded": {f["id"]: f"{f['rule']}: {f['excluded']}" for f in lock["families"] if f.get("excluded")},
            "classes": {s: {f["family"]: f["class"] for f in kept if f["split"] == s}
                        for s in ("train", "val", "test")}}


# -- hand classes and splits --------------------------------------------------------------------------------

def hand_class(family_id: str, cursive: bool) -> str:
    """``school`` for the school hands (Playwrite, Edu *), else ``cursive`` when the letters join
    (:func:`fonts.joins_letters`), else ``print``."""
    if family_id.startswith(("playwrite-", "edu-")):
        return "school"
    return "cursive" if cursive else "print"


def split_of(family_id: str) -> str:
    """The split of a family: a function of its id alone (a salted sha256 read as a number in [0, 1)
    against :data:`SPLIT_FRACTIONS`), so adding or removing a family never moves another one. Applied
    within each hand class, so every split mixes the classes in about the same proportions."""
    u = int(hashlib.sha256(f"{SPLIT_SALT}:{family_id}".encode()).hexdigest()[:15], 16) / 16 ** 15
    if u < SPLIT_FRACTIONS["test"]:
        return "test"
    if u < SPLIT_FRACTIONS["test"] + SPLIT_FRACTIONS["val"]:
        return "val"
    return "train"


# -- writing the lock (set-up time, network) ----------------------------------------------------------------

def _choose_files(meta: dict) -> list[tuple[int, str]]:
    """(weight, style) of the files used: regular (400 normal, else the weight nearest 400), plus one
    variant of the same hand: 400 italic when there is one, else the boldest other weight up to 700,
    else the lightest other weight."""
    weights, styles = sorted(meta["weights"]), meta["styles"]
    base = 400 if 400 in weights else min(weights, key=lambda w: (abs(w - 400), w))
    style = "normal" if "normal" in styles else styles[0]
    files = [(base, style)]
    if style == "normal" and "italic" in styles:
        files.append((base, "italic"))
    else:
        others = [w for w in weights if w != base]
        heavier = [w for w in others if base < w <= 700]
        if heavier:
            files.append((max(heavier), style))
        elif others:
            files.append((min(others), style))
    return files


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _debian_version(package: str) -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def update_lock(out: str | os.PathLike | None = None, fonts_dir: str | os.PathLike | None = None,
                workers: int = 8, progress: bool = True) -> dict:
    """Write a new lock from the registry's current ``google-font-metadata`` and ``@fontsource/*`` versions
    and the installed Debian fonts: fetch every candidate, apply the exclusion rules
    (:func:`fonts.exclusion_reason`), classify the hands and assign the splits. Returns the lock."""
    from dawnet.ocr.data.fonts import (
        DEBIAN_HANDWRITING_FONTS,
        EXCLUSION_RULES,
        FONT_DIRS,
        exclusion_reason,
        font_info,
        glyph_measures,
        joins_letters,
    )
    from dawnet.ocr.data.text import TEXT_ALPHABET

    registry = npm_registry()
    root = cache_dir(fonts_dir)
    say = print if progress else (lambda *a, **k: None)
    pk = _packument(registry, _METADATA_PACKAGE)
    mver = pk["dist-tags"]["latest"]
    mdist = pk["versions"][mver]["dist"]
    data = _get(_tarball_url(registry, _METADATA_PACKAGE, mver))
    _check_integrity(data, mdist["integrity"], f"{_METADATA_PACKAGE}@{mver}")
    meta_all = json.loads(_extract(data, ["data/google-fonts-v2.json"])["data/google-fonts-v2.json"])
    metas = sorted((m for m in meta_all.values() if m.get("category") == "handwriting"), key=lambda m: m["id"])
    say(f"{_METADATA_PACKAGE}@{mver}: {len(metas)} handwriting families")

    def meta_rule(m: dict) -> str | None:
        if m["id"].endswith("-guides"):
            return "Playwrite '-guides' variant: draws guide lines behind the letters"
        cjk = [s for s in m["subsets"] if s.startswith(CJK_SUBSETS)]
        if cjk:
            return f"CJK-first family (subsets {', '.join(cjk)}): its Latin is an afterthought"
        if "latin" not in m["subsets"]:
            return f"no latin subset (subsets: {', '.join(m['subsets'])})"
        return None

    def one(m: dict) -> dict:
        package = f"@fontsource/{m['id']}"
        fam = {"id": m["id"], "family": m["family"], "source": "fontsource", "package": package}
        p = _packument(registry, package)
        if p is None:
            fam.update(version=None, integrity=None, files=[], rule="metadata",
                       excluded="not packaged by Fontsource on the npm registry")
            return fam
        ver = p["dist-tags"]["latest"]
        fam.update(version=ver, integrity=p["versions"][ver]["dist"]["integrity"], license="OFL-1.1")
        reason = meta_rule(m)
        if reason:
            fam.update(files=[], excluded=reason, rule="metadata")
            return fam
        names = [f"{m['id']}-latin-{w}-{s}.woff" for w, s in _choose_files(m)]
        blob = _get(_tarball_url(registry, package, ver))
        _check_integrity(blob, fam["integrity"], f"{package}@{ver}")
        got = _extract(blob, [f"files/{n}" for n in names] + ["metadata.json"])
        try:
            lic = json.loads(got.get("metadata.json", b"{}")).get("license", {})
            fam["license"] = (lic.get("type") if isinstance(lic, dict) else str(lic)) or fam["license"]
        except (json.JSONDecodeError, AttributeError):
            pass
        files = []
        for n in names:
            b = got.get(f"files/{n}")
            if b is None:
                continue
            atomic_write_bytes(root / f"fontsource/{m['id']}/{ver}/{n}", b)
            w, s = n[:-5].rsplit("-", 2)[1:]
            files.append({"name": n, "weight": int(w), "style": s, "sha256": hashlib.sha256(b).hexdigest()})
        fam["files"] = files
        if not files:
            fam.update(excluded="no latin regular file in the package", rule="metadata")
        return fam

    with ThreadPoolExecutor(max(1, workers)) as ex:
        families = list(ex.map(one, metas))
    say(f"fetched {sum(1 for f in families if f['files'])} Fontsource packages")
    google_names = {_slug(f["family"]): f["id"] for f in families if not f.get("excluded")}
    by_family: dict[str, dict] = {}
    for package, rels in DEBIAN_HANDWRITING_FONTS.items():
        for rel in rels:
            path = next((os.path.join(d, rel) for d in FONT_DIRS if os.path.isfile(os.path.join(d, rel))), None)
            if path is None:
                continue
            info = font_info(path)
            fam = by_family.setdefault(info.family, {
                "id": f"{package}:{_slug(info.family)}", "family": info.family, "source": "debian", "package": package,
                "version": _debian_version(package), "license": "see /usr/share/doc/" + package + "/copyright",
                "files": []})
            fam["files"].append({"path": rel, "style": info.style, "sha256": info.sha256})
    for fam in by_family.values():
        dup = google_names.get(_slug(fam["family"]))
        if dup:
            fam.update(excluded=f"same hand as the pinned Fontsource family {dup} (kept: its bytes are pinned)",
                       rule="duplicate")
        families.append(fam)
    for fam in families:
        if fam.get("excluded") or not fam["files"]:
            continue
        path = _file_path(fam, fam["files"][0], root)
        reason = exclusion_reason(path)
        if reason is None or reason[0] != "coverage":
            fam["measures"] = glyph_measures(path)
        if reason:
            fam.update(excluded=reason[1], rule=reason[0])
            continue
        for f in fam["files"][1:]:  # a variant that lacks a glyph the regular has is left out, with the reason
            why = exclusion_reason(_file_path(fam, f, root))
            if why and why[0] == "coverage":
                fam.setdefault("dropped_files", []).append({**f, "reason": why[1]})
        dropped = {f["sha256"] for f in fam.get("dropped_files", ())}
        fam["files"] = [f for f in fam["files"] if f["sha256"] not in dropped]
        fam["class"] = hand_class(fam["id"], joins_letters(path))
        fam["split"] = split_of(fam["id"])
    families.sort(key=lambda f: f["id"])
    lock = {"format": "dawnet.fonts-lock", "format_version": 1,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "alphabet": "".join(sorted(set(TEXT_ALPHABET))),
            "category_source": {"package": _METADATA_PACKAGE, "version": mver, "integrity": mdist["integrity"],
                                "file": "data/google-fonts-v2.json", "category": "handwriting",
                                "families": len(metas)},
            "files_used": "latin subset WOFF: regular (400 normal, else the weight nearest 400) plus one variant "
                          "(400 italic, else the boldest other weight <= 700, else the lightest other weight)",
            "exclusion_rules": {"metadata": "Playwrite '-guides' variants; CJK-first families (a chinese, "
                                            "japanese, korean or hentaigana subset); no latin subset; not "
                                            "packaged by Fontsource",
                                "duplicate": "a Debian font whose family Fontsource also packages (the pinned "
                                             "Fontsource bytes are kept)", **EXCLUSION_RULES},
            "class_rule": "school: Playwrite and Edu families; cursive: 'nmunmu' set as one word renders as at most "
                          "3 ink components at 64 px (the letters join); print: the rest",
            "split_rule": {"salt": SPLIT_SALT, "fractions": SPLIT_FRACTIONS,
                           "rule": "u = sha256(salt:id)[:15 hex] / 16^15; test if u < 0.16, val if u < 0.24, "
                                   "else train; the same thresholds in every hand class"},
            "families": families}
    dest = Path(out) if out is not None else LOCK_PATH
    atomic_write_text(dest, json.dumps(lock, indent=1, ensure_ascii=False) + "\n")
    return lock
