"""Benchmark of `moeprint site` on the imported real gpt-oss-20b traces.

Prints: build time, time to first render of the overview in headless Chromium (from navigation start
to the overview's `moeprint:overview-rendered` performance mark; target < 1 s), the total size of the
files the overview loads, and the same for the token view and the comparison page.

    python bench/site.py                      # imports /work/shared/... into a temp dir first (~1 min)
    python bench/site.py --analyze            # ... and fingerprint it before building the site
    python bench/site.py --run runs/imported  # an already imported run
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

REPO = Path(__file__).resolve().parents[1]
# ../shared next to the repository, also from a git worktree deeper down
DEFAULT_SRC = next(
    (
        p / "shared" / "data" / "expert-fingerprinting"
        for p in REPO.parents
        if (p / "shared" / "data" / "expert-fingerprinting").is_dir()
    ),
    REPO.parent / "shared" / "data" / "expert-fingerprinting",
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def page_load(browser, url: str, mark: str, repeats: int) -> tuple[float, int, int]:
    """Median ms from navigation start to `mark`, and bytes / number of files loaded (fresh context each time)."""
    times, sizes, counts = [], [], []
    for _ in range(repeats):
        ctx = browser.new_context(viewport={"width": 1366, "height": 768})
        page = ctx.new_page()
        files: set[str] = set()
        page.on("request", lambda r: files.add(r.url))
        page.goto(url)
        page.wait_for_function(
            f"() => performance.getEntriesByName('{mark}').length > 0", timeout=30000
        )  # a function: the CSP forbids eval
        times.append(page.evaluate(f"performance.getEntriesByName('{mark}')[0].startTime"))
        local = [Path(unquote(urlparse(u).path)) for u in files if u.startswith("file://")]
        sizes.append(sum(p.stat().st_size for p in local))
        counts.append(len(local))
        ctx.close()
    return statistics.median(times), max(sizes), max(counts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="an imported run directory (default: import the published data)")
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC, help="published data to import when --run is absent")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--analyze", action="store_true", help="run `moeprint analyze` on the fresh import first")
    ap.add_argument("--screenshots", type=Path, help="also write the documentation screenshots into this directory")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from moeprint.report import build_site

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            from moeprint.importers.fingerprinting import import_fingerprinting

            t = time.perf_counter()
            import_fingerprinting(args.src, Path(tmp) / "run", progress=False)
            print(f"import of {args.src}: {time.perf_counter() - t:.1f} s")
            run = Path(tmp) / "run"
            if args.analyze:
                from moeprint.analyze import analyze_run

                t = time.perf_counter()
                analyze_run(run, progress=False)
                print(f"analyze: {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        site = build_site(run, Path(tmp) / "site")
        build_s = time.perf_counter() - t
        total = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
        n_files = sum(1 for p in site.rglob("*") if p.is_file())
        print(f"build: {build_s:.2f} s, site {total / 1e6:.1f} MB in {n_files} files")

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            index = (site / "index.html").as_uri()
            cases = [
                ("overview", index, "moeprint:overview-rendered"),
                ("overview, domain math, lift", index + "#domain=math&metric=lift", "moeprint:overview-rendered"),
                (
                    "comparison math vs rest",
                    (site / "comparison.html").as_uri() + "#aname=math&bkind=rest",
                    "moeprint:comparison-rendered",
                ),
                ("token view, first math prompt", index + "#view=tokens&fdomain=math", "moeprint:tokens-rendered"),
            ]
            for name, url, mark in cases:
                ms, size, count = page_load(browser, url, mark, args.repeats)
                print(
                    f"{name}: first render {ms:.0f} ms (median of {args.repeats}), loads {size / 1e3:.0f} kB in {count} files"
                    f" -> {ms / 1000:.2f} x the 1 s target"
                )
            if args.screenshots:
                shots(browser, site, args.screenshots)
            browser.close()


def shots(browser, site: Path, out: Path) -> None:
    """The PNGs of docs/site.md, at a 1366x768 laptop size."""
    out.mkdir(parents=True, exist_ok=True)
    views = {
        "site-overview.png": ("index.html", "#view=overview&domain=math&metric=lift&layer=3&expert=17"),
        "site-tokens.png": ("index.html", "#view=tokens&fdomain=math&layer=5&token=60"),
        "site-domain.png": ("index.html", "#view=domain&src=1&domain=law"),
        "site-comparison.png": ("comparison.html", "#arun=1&aname=math&aseg=think&bkind=rest&bseg=think&layer=3"),
    }
    for name, (page_name, fragment) in views.items():
        ctx = browser.new_context(viewport={"width": 1366, "height": 768})
        page = ctx.new_page()
        page.goto((site / page_name).as_uri() + fragment)
        page.wait_for_timeout(800)
        page.screenshot(path=str(out / name))
        ctx.close()
        print(f"screenshot {out / name}")


if __name__ == "__main__":
    main()
