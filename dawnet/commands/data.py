"""``dawnet data``: generate the benchmark data specs to disk, list them, verify and show built data."""

from __future__ import annotations

import argparse
import json
import os

from dawnet.commands import CommandError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "data",
        help="Build, verify and show the OCR benchmark data (synthetic lines, digit strings, pages).",
        description="Generate the versioned OCR data specs (hw-lines-v1/v2, digits-v1, pages-v1/v2) to disk, "
                    "verify a built folder against its manifest, and draw contact sheets.",
    )
    sub = p.add_subparsers(title="data commands", metavar="<data command>")

    b = sub.add_parser("build", help="Generate a data spec into a folder (reusing files already there).",
                       description="Generate SPEC into --out with one process per CPU and a progress bar; "
                                   "writes manifest.json with per-file checksums and the Pillow, FreeType and "
                                   "font versions used. Files that match the manifest of the same spec are reused.")
    b.add_argument("spec", help="Spec name (see 'dawnet data list': hw-lines-v1, hw-lines-v2, digits-v1, pages-v1, "
                                "pages-v2, ...); add ':smoke' for a tiny copy.")
    b.add_argument("--out", required=True, help="Output folder (created if missing).")
    b.add_argument("--size", default=None, choices=["default", "smoke"],
                   help="Size profile (default: the spec's benchmark size).")
    b.add_argument("--workers", type=int, default=None, help="Worker processes (default: the CPU count).")
    b.add_argument("--fonts", default=None, metavar="DIR",
                   help="Use the .ttf/.otf/.woff fonts under DIR instead of the spec's fonts (families are split "
                        "train/val/test by name); for a v2 spec, a font cache written by scripts/fetch-fonts "
                        "--fonts DIR is used as the pinned pool. Default: the spec's fonts.")
    b.add_argument("--force", action="store_true", help="Regenerate every file even if it is current.")
    b.add_argument("--json", action="store_true", help="Print a JSON summary instead of text.")
    b.set_defaults(func=run_build)

    s = sub.add_parser("show", help="Draw a contact sheet of a built data folder or of a spec's lines.",
                       description="Draw N random items of a split of a built data folder (lines with their "
                                   "transcription and font, or pages with their boxes), or of a lines spec "
                                   "rendered on the fly (the same images a build writes), into a grayscale PNG. "
                                   "--families draws one line per font family of the split instead.")
    s.add_argument("dir", metavar="DIR_OR_SPEC", help="A folder made by 'dawnet data build', or a spec name.")
    s.add_argument("--families", action="store_true",
                   help="One line per font family of the split (a spec or a built folder's spec).")
    s.add_argument("--fonts", default=None, metavar="DIR", help="As for 'dawnet data build' (spec only).")
    s.add_argument("--out", required=True, help="Image file to write (e.g. sheet.png).")
    s.add_argument("--split", default="train", choices=["train", "val", "test"], help="Split (default: train).")
    s.add_argument("-n", type=int, default=16, help="Number of items (default: 16; not with --families).")
    s.add_argument("--seed", type=int, default=0, help="Which items to pick (default: 0).")
    s.set_defaults(func=run_show)

    v = sub.add_parser("verify", help="Check a built data folder against its manifest checksums.",
                       description="Recompute the sha256 of every file listed in manifest.json; exit 1 if any "
                                   "differs or is missing.")
    v.add_argument("dir", help="A folder made by 'dawnet data build'.")
    v.add_argument("--json", action="store_true", help="Print a JSON summary instead of text.")
    v.set_defaults(func=run_verify)

    f = sub.add_parser("fonts", help="Fetch, verify or summarize the pinned handwriting font pool (v2 specs).",
                       description="The pool behind hw-lines-v2 and pages-v2: the Debian handwriting fonts plus "
                                   "Google Fonts' handwriting category as Fontsource packages it on the npm "
                                   "registry, pinned by dawnet/ocr/data/fonts-lock.json. Without options: check "
                                   "the cache against the lock and summarize the pool. Set-up runs --fetch.")
    f.add_argument("--fetch", action="store_true",
                   help="Download the pinned packages missing from the cache (only the font files used are kept; "
                        "sha256-checked). Idempotent and quick when cached.")
    f.add_argument("--update-lock", action="store_true",
                   help="Rewrite the lock from the registry's current versions and re-apply the exclusion rules "
                        "(changes the pool: a new data version needs it, a published one never).")
    f.add_argument("--fonts", default=None, metavar="DIR",
                   help="Cache folder (default: $DAWNET_FONTS_DIR, else $XDG_CACHE_HOME/dawnet/fonts, else "
                        "~/.cache/dawnet/fonts).")
    f.add_argument("--json", action="store_true", help="Print JSON instead of text.")
    f.set_defaults(func=run_fonts)

    ls = sub.add_parser("list", help="List the data specs and their sizes.",
                        description="List the versioned data specs with their sizes, seeds and test fonts.")
    ls.add_argument("--json", action="store_true", help="Print JSON instead of text.")
    ls.set_defaults(func=run_list)
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])


def run_build(args: argparse.Namespace) -> int:
    from dawnet.ocr.data.builder import build
    from dawnet.ocr.data.specs import spec

    if args.workers is not None and args.workers < 1:
        raise CommandError(f"--workers must be at least 1, got {args.workers}")
    try:
        s = spec(args.spec, size=args.size)
    except LookupError as e:
        raise CommandError(str(e)) from None
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise CommandError(f"--out {args.out} is a file, not a folder: give a new or existing folder")
    try:
        manifest = build(s, args.out, workers=args.workers, fonts_dir=args.fonts, progress=not args.json)
    except (ModuleNotFoundError, FileNotFoundError) as e:  # mlxtend, lmdb or a pinned font missing: says the fix
        raise CommandError(str(e)) from None
    summary = {"spec": s.name, "size": s.size, "out": os.path.abspath(args.out), "splits": manifest["splits"],
               "seconds": manifest["build_seconds"], "files": len(manifest["files"]),
               "freetype": manifest["versions"]["freetype"], "pillow": manifest["versions"]["pillow"]}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        counts = ", ".join(f"{k} {v['count']} (reused {v['reused']})" for k, v in manifest["splits"].items())
        print(f"built {s.name} ({s.size}) in {summary['seconds']} s into {summary['out']}: {counts}; "
              f"{summary['files']} files checksummed in manifest.json")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from dawnet.ocr.data.sheet import contact_sheet

    if args.n < 1:
        raise CommandError(f"-n must be at least 1, got {args.n}")
    if os.path.isdir(args.dir):
        if args.families:
            from dawnet.ocr.data.builder import read_manifest
            from dawnet.ocr.data.sheet import family_sheet
            from dawnet.ocr.data.specs import DataSpec

            manifest = read_manifest(args.dir)
            if manifest is None:
                raise CommandError(f"no manifest.json in {args.dir}: build it first (dawnet data build SPEC --out DIR)")
            fig = family_sheet(DataSpec.from_dict(manifest["spec"]), args.split, seed=args.seed,
                               fonts_dir=manifest.get("fonts_dir"))
        else:
            fig = contact_sheet(args.dir, split=args.split, n=args.n, seed=args.seed)
    else:
        from dawnet.ocr.data.fontpool import FontPoolError
        from dawnet.ocr.data.sheet import family_sheet, spec_sheet
        from dawnet.ocr.data.specs import spec

        try:
            s = spec(args.dir)
            if args.families:
                fig = family_sheet(s, args.split, seed=args.seed, fonts_dir=args.fonts)
            else:
                fig = spec_sheet(s, args.split, n=args.n, seed=args.seed, fonts_dir=args.fonts)
        except (LookupError, FontPoolError, FileNotFoundError) as e:
            raise CommandError(f"{args.dir} is neither a built data folder nor a usable spec: {e}") from None
        except ValueError as e:
            raise CommandError(str(e)) from None
    out = os.path.abspath(args.out)
    save_sheet(fig, out)
    print(f"wrote {out}")
    return 0


def save_sheet(fig, out: str, dpi: int = 90) -> None:
    """Write a contact sheet as a grayscale PNG (a third of the RGBA size), atomically."""
    import io

    from dawnet.atomic import atomic_write_bytes
    from dawnet.images import load_image

    buf, gray = io.BytesIO(), io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    load_image(buf.getvalue()).save(gray, format="png", optimize=True)
    atomic_write_bytes(out, gray.getvalue())


def run_verify(args: argparse.Namespace) -> int:
    from dawnet.ocr.data.builder import read_manifest, verify

    bad = verify(args.dir)
    n = len(read_manifest(args.dir)["files"])
    if args.json:
        print(json.dumps({"files": n, "bad": bad}, indent=2))
    elif bad:
        print(f"{len(bad)} of {n} files differ from manifest.json or are missing:")
        for rel in bad[:50]:
            print(f"  {rel}")
    else:
        print(f"all {n} files match manifest.json")
    return 1 if bad else 0


def run_list(args: argparse.Namespace) -> int:
    from dawnet.ocr.data.specs import BENCH_DATA, list_specs, spec

    specs = [spec(n) for n in list_specs()]
    bench = set(BENCH_DATA.values())
    if args.json:
        print(json.dumps([{**s.to_dict(), "bench": s.name in bench} for s in specs], indent=2))
        return 0
    for s in specs:
        sizes = "/".join(str(s.sizes[k]) for k in ("train", "val", "test"))
        test = s.fonts.get("test", ())
        test_fonts = ", ".join(test) if len(test) <= 4 else f"{len(test)} families ({', '.join(test[:3])}, ...)"
        test_fonts = test_fonts or "-"
        mark = "  [dawnet bench uses this]" if s.name in bench else ""
        print(f"{s.name:18s} {s.kind:7s} train/val/test {sizes:18s} seed {s.seed}  test fonts: {test_fonts}{mark}")
        print(f"{'':18s} {s.description}")
    print("dawnet bench uses: " + ", ".join(f"{k} {v}" for k, v in BENCH_DATA.items()))
    return 0


def run_fonts(args: argparse.Namespace) -> int:
    from collections import Counter

    from dawnet.ocr.data import fontpool

    try:
        if args.update_lock:
            lock = fontpool.update_lock(fonts_dir=args.fonts, progress=not args.json)
        else:
            lock = fontpool.load_lock()
        if args.fetch or args.update_lock:
            summary = fontpool.fetch(args.fonts, lock, progress=not args.json)
        else:
            summary = {"cache": str(fontpool.cache_dir(args.fonts))}
    except fontpool.FontPoolError as e:
        raise CommandError(str(e)) from None
    bad = fontpool.verify_cache(args.fonts, lock)
    kept = fontpool.pool_families(lock)
    excluded = Counter(f["rule"] for f in lock["families"] if f.get("excluded"))
    splits = {s: dict(Counter(f["class"] for f in kept if f["split"] == s)) for s in ("train", "val", "test")}
    summary.update(bad=bad, families=len(kept), splits=splits, excluded=dict(excluded))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        if "fetched" in summary:
            print(f"fetched {summary['fetched']} of {summary['packages']} pinned packages "
                  f"({summary['downloaded_bytes'] / 1e6:.1f} MB) in {summary['seconds']} s")
        mix = "; ".join(f"{s} {sum(c.values())} ({', '.join(f'{k} {v}' for k, v in sorted(c.items()))})"
                        for s, c in splits.items())
        print(f"font pool: {len(kept)} families: {mix}")
        print("excluded: " + ", ".join(f"{k} {v}" for k, v in sorted(excluded.items())))
        if bad:
            print(f"{len(bad)} pinned font files are missing or differ in {summary['cache']}; first: {bad[0]}. "
                  f"Fix: {fontpool.FETCH_COMMAND}")
        else:
            print(f"cache {summary['cache']}: every pinned file matches the lock")
    return 1 if bad else 0
