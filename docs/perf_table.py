#!/usr/bin/env python3
"""Turn `tally bench --json` output into the README's performance table.

    cargo run --release -- bench --json > bench.json
    python3 docs/perf_table.py bench.json [--machine "..."] [--write README.md]

With --write, the table replaces what lies between the perf-table markers.
"""
import argparse
import json
import re
import sys


def lat_row(name, d, floor_p50, two_p50):
    return (f"| {name} | {d['p50_ns']} | {d['p90_ns']} | {d['p99_ns']} | {d['p999_ns']} "
            f"| {d['max_ns']} | {d['mean_ns']} | {d['p50_ns'] / max(floor_p50, 1):.2f} "
            f"| {d['p50_ns'] / max(two_p50, 1):.2f} |")


def table(b, machine):
    lat, thr = b["latency"], b["throughput"]
    floor = lat["baselines"]["floor"]
    two = lat["baselines"]["two_line"]
    f50, t50 = floor["p50_ns"], two["p50_ns"]
    out = [f"**Latency, {lat['payload_bytes']} B payload, {lat['iters']} round trips** (ns)", "",
           "| | p50 | p90 | p99 | p99.9 | max | mean | p50 / floor p50 | p50 / two-line p50 |",
           "|---|---|---|---|---|---|---|---|---|",
           lat_row("floor (one shared cache line)", floor, f50, t50),
           lat_row("two lines (one per direction)", two, f50, t50),
           lat_row("**tally**", lat, f50, t50),
           lat_row("pipe", lat["baselines"]["pipe"], f50, t50),
           lat_row("unix socket", lat["baselines"]["uds"], f50, t50),
           "",
           f"Placement: {lat['placement']} (one-line floor p50 {f50} ns).", ""]
    w = lat.get("wake")
    if w:
        out += [f"Waking a parked peer (the sender pauses so the receiver sleeps, then stamps the "
                f"message): tally p50 {w['tally']['p50_ns']} ns, p99 {w['tally']['p99_ns']} ns; "
                f"a raw futex wake in the same run: p50 {w['futex']['p50_ns']} ns, "
                f"p99 {w['futex']['p99_ns']} ns.", ""]
    p = thr["payload_bytes"]
    out += [f"**Throughput, {p} B payload, {thr['seconds']} s per run** (consumer verifies every "
            f"sequence number; errors: {thr['errors']})", "",
            "| | msgs/s | GB/s |", "|---|---|---|",
            f"| zero-copy `reserve`/`commit`, `peek`/`release` | {thr['msgs_per_s'] / 1e6:.1f} M | {thr['bytes_per_s'] / 1e9:.2f} |",
            f"| zero-copy batches of {thr['batch_size']} | {thr['batch_msgs_per_s'] / 1e6:.1f} M | {thr['batch_bytes_per_s'] / 1e9:.2f} |",
            f"| copying `try_send`/`try_recv` | {thr['copy_msgs_per_s'] / 1e6:.1f} M | {thr['copy_bytes_per_s'] / 1e9:.2f} |"]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+", help="bench JSON files (each with latency and throughput)")
    ap.add_argument("--machine", default="this machine")
    ap.add_argument("--write", help="README to update between the perf-table markers")
    a = ap.parse_args()
    intro = (f"Measured on {a.machine}, one `tally bench --json` run per payload size "
             f"(files: {', '.join(a.files)}): processes pinned to CPUs 0 and 1; one-way latency "
             f"= round trip / 2; the sender writes the whole payload and the receiver reads all "
             f"of it. The floors: one cache line bounced between the two processes (each side "
             f"reads it and writes it back), the physical limit of a cross-core hand-off; and "
             f"two cache lines, one per direction, one word each (each side writes its own line "
             f"and reads the other's), the least a pair of rings can do. tally is judged against "
             f"the two-line floor; the one-line figure is kept for reference.")
    text = intro + "\n\n" + "\n\n".join(table(json.load(open(f)), a.machine) for f in a.files)
    if a.write:
        readme = open(a.write).read()
        new, n = re.subn(r"(<!-- perf-table:start -->\n).*?(<!-- perf-table:end -->)",
                         lambda m: m.group(1) + text + "\n" + m.group(2), readme, flags=re.S)
        if n != 1:
            sys.exit("perf-table markers not found")
        open(a.write, "w").write(new)
    else:
        print(text)


if __name__ == "__main__":
    main()
