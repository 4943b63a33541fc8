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


def fmt_rate(x):
    return f"{x / 1e6:.1f} M"


def mpmc_tables(lat, thr_files):
    """MPMC latency (1,1) and throughput tables, from `tally bench ... --mpmc` files."""
    out = []
    if lat:
        b = lat["baselines"]
        two = b["two_line"]["p50_ns"]
        out += [f"**MPMC latency, 1 producer x 1 consumer, {lat['message_bytes']} B messages, "
                f"{lat['iters']} round trips** (ns; one-way = RTT / 2)", "",
                "| | p50 | p99 | p50 / two-line p50 |", "|---|---|---|---|",
                f"| two lines (one per direction) | {two} | {b['two_line']['p99_ns']} | 1.00 |",
                f"| **tally MpmcRing**, processes | {lat['p50_ns']} | {lat['p99_ns']} | {lat['p50_ns'] / max(two, 1):.2f} |",
                f"| tally Ring (SPSC), processes | {b['spsc']['p50_ns']} | {b['spsc']['p99_ns']} | {b['spsc']['p50_ns'] / max(two, 1):.2f} |",
                f"| crossbeam ArrayQueue, threads | {b['array_queue']['p50_ns']} | {b['array_queue']['p99_ns']} | {b['array_queue']['p50_ns'] / max(two, 1):.2f} |",
                ""]
    for thr in thr_files:
        b = thr["baselines"]
        pc = f"{thr['producers']} x {thr['consumers']}"
        out += [f"**MPMC throughput, {pc} processes, {thr['message_bytes']} B messages, "
                f"{thr['ring_slots']} slots, {thr['seconds']} s** (every consumer verifies "
                f"per-producer order, the union is checked exactly-once; errors: {thr['errors']})", "",
                "| | msgs/s | MPMC / this |", "|---|---|---|",
                f"| **tally MpmcRing**, {pc} processes | {fmt_rate(thr['msgs_per_s'])} | 1.00 |",
                f"| tally Ring (SPSC), 1 x 1 processes | {fmt_rate(b['spsc']['msgs_per_s'])} | {thr['msgs_per_s'] / b['spsc']['msgs_per_s']:.2f} |",
                f"| crossbeam ArrayQueue, {thr['producers']} + {thr['consumers']} threads | {fmt_rate(b['array_queue']['msgs_per_s'])} | {thr['msgs_per_s'] / b['array_queue']['msgs_per_s']:.2f} |",
                ""]
    return out


def sync_table(s):
    b = s["baselines"]
    m, sem, ev = s["mutex"], s["semaphore"], s["event"]
    return ["**Semaphores, mutexes, events** (ns, p50; spinning hand-offs are round trip / 2 on "
            "one clock, sleeping ones one-way; uncontended = one lock+unlock or wait+post)", "",
            "| | uncontended | hand-off, spinning | hand-off, sleeping |", "|---|---|---|---|",
            f"| **tally Mutex** | {m['uncontended_ns']} | {m['handoff_spin_p50_ns']} | {m['handoff_sleep_p50_ns']} |",
            f"| **tally Semaphore** | {sem['uncontended_ns']} | {sem['handoff_spin_p50_ns']} | {sem['handoff_sleep_p50_ns']} |",
            f"| **tally Event** | | | {ev['handoff_sleep_p50_ns']} |",
            f"| robust pthread mutex (process-shared) | {b['pthread_robust_mutex']['uncontended_ns']} | | |",
            f"| POSIX named semaphore | {b['posix_semaphore']['uncontended_ns']} | | {b['posix_semaphore']['handoff_sleep_p50_ns']} |",
            f"| raw futex wake | | | {b['futex']['wake_p50_ns']} |",
            f"| two-line floor | | {b['two_line']['p50_ns']} | |",
            "",
            "Ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(s["ratios"].items())) + ".",
            ""]


def lifecycle_table(l):
    c = l["cpu"]
    raw_c, raw_o = c["baselines"]["raw_create_ns"], c["baselines"]["raw_open_ns"]
    oc = c["open_close_ns"]
    rows = [("raw create cycle (`shm_open` ... `shm_unlink`)", raw_c, raw_c),
            ("`Region` (4 KiB) create + destroy", c["create_destroy_ns"]["region"], raw_c),
            ("`Ring<u64>` (4096 slots) create + destroy", c["create_destroy_ns"]["ring"], raw_c),
            ("raw open cycle (`shm_open`, `mmap`, `munmap`, `close`)", raw_o, raw_o),
            ("POSIX `sem_open` + `sem_close`", c["baselines"]["sem_open_close_ns"], raw_o)]
    rows += [(f"`Region` open + close, {k} other holder processes", oc[k], raw_o)
             for k in ["1", "8", "64", "512"]]
    out = [f"**Object lifecycle** (ns per operation, CPU time, best of {l['batches']} batches of "
           f"{l['ops_per_batch']})", "", "| | ns | / raw |", "|---|---|---|"]
    out += [f"| {n} | {v:.0f} | {v / max(r, 1):.2f} |" for n, v, r in rows]
    out += [f"| sweep of 1 / 64 dead holders | {c['sweep_ns']['1']:.0f} / {c['sweep_ns']['64']:.0f} | |",
            "", f"Open + close with 512 other holders / with 1: {oc['512'] / oc['1']:.2f}.", ""]
    return out


def broadcast_tables(files):
    out = []
    for b in files:
        lat, thr = b.get("latency"), b.get("throughput")
        if lat is None and thr is None and "msgs_per_s" in b:
            thr = b
        if lat:
            two = lat["baselines"]["two_line"]["p50_ns"]
            out += [f"**Broadcast latency, {lat.get('subscribers', '?')} subscriber(s)**: p50 "
                    f"{lat['p50_ns']} ns, two-line floor {two} ns ({lat['p50_ns'] / max(two, 1):.2f} x).", ""]
        if thr:
            fan = thr["baselines"]["spsc_fanout"]["msgs_per_s"]
            out += [f"**Broadcast throughput, {thr.get('subscribers', '?')} subscriber(s), lossless**: "
                    f"{fmt_rate(thr['msgs_per_s'])} msgs/s to every subscriber (errors {thr['errors']}, "
                    f"lagged {thr['lagged']}); one SPSC ring per subscriber with the publisher "
                    f"copying: {fmt_rate(fan)} ({thr['msgs_per_s'] / max(fan, 1):.2f} x).", ""]
    return out


def extras(paths):
    """Tables of the other benchmark files, those of them that exist."""
    import os
    load = lambda f: json.load(open(f)) if os.path.exists(f) else None
    d = "docs/bench/"
    out = mpmc_tables(load(d + "mpmc-latency-1-1.json"),
                      [x for x in (load(d + "mpmc-1-1.json"), load(d + "mpmc-2-2.json")) if x])
    bc = [x for x in (load(d + "broadcast-1.json"), load(d + "broadcast-2.json")) if x]
    out += broadcast_tables(bc)
    s = load(d + "sync.json")
    if s:
        out += sync_table(s)
    lc = load(d + "lifecycle.json")
    if lc:
        out += lifecycle_table(lc)
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
    text += "\n\n" + extras(a.files)
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
