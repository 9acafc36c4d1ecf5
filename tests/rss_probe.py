"""Resident memory of one process calling a bundle: RSS after `--first` calls and after `--total`.

Run by tests/test_concurrency.py in a process of its own, so nothing else allocates beside the
model; prints one JSON line {"rss_first": bytes, "rss_total": bytes, "native": bool, ...}.

    python tests/rss_probe.py BUNDLE IMAGE... [--native auto|yes|no] [--threads N] [--first 1000] [--total 10000]
"""
import argparse
import gc
import json
import os
import sys


def rss_bytes() -> int:
    """Resident set size now (not the peak): /proc/self/statm's second field, in pages."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--native", choices=("auto", "yes", "no"), default="auto")
    ap.add_argument("--threads", type=int, default=None, help="engine threads (default: the bundle's)")
    ap.add_argument("--first", type=int, default=1000)
    ap.add_argument("--total", type=int, default=10000)
    args = ap.parse_args(argv)

    import edgesdk
    from edgesdk.device.preprocess import read_image

    frames = [read_image(p) for p in args.images]
    native = {"auto": None, "yes": True, "no": False}[args.native]
    with edgesdk.load(args.bundle, native=native, threads=args.threads) as model:
        counts, sizes = (args.first, args.total), []
        done = 0
        for count in counts:
            while done < count:
                model(frames[done % len(frames)])
                done += 1
            gc.collect()
            sizes.append(rss_bytes())
        print(json.dumps({"rss_first": sizes[0], "rss_total": sizes[1], "first": args.first,
                          "total": args.total, "native": model.native, "backend": model.backend}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
