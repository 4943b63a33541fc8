"""A plain Zenoh subscriber (the eclipse-zenoh Python package) that reads what
`tally-bridge export` publishes, decoding the wire format from its documentation
alone (bridge/README.md), and checks every header field.

usage: sub.py ENDPOINT KEY COUNT TYPE_ID_HEX PAYLOAD_SIZE

Connects to ENDPOINT, prints "ready" once subscribed, then one JSON line per sample
({"seq", "session", "stream", "payload_hex"}), and "done" after COUNT samples with
sequences 0..COUNT-1. Exits 1 with a message on the first malformed sample."""

import json
import struct
import sys
import time

import zenoh

HEADER = struct.Struct("<4sBBHQQIIQQ")  # 48 bytes, little-endian
assert HEADER.size == 48


def fail(msg):
    print(f"sub.py: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def main():
    endpoint, key, count, type_id, size = sys.argv[1:6]
    count, type_id, size = int(count), int(type_id, 16), int(size)
    conf = zenoh.Config()
    conf.insert_json5("mode", json.dumps("client"))
    conf.insert_json5("connect/endpoints", json.dumps([endpoint]))
    conf.insert_json5("scouting/multicast/enabled", "false")
    with zenoh.open(conf) as session:
        sub = session.declare_subscriber(key)
        print("ready", flush=True)
        expected = 0
        deadline = time.monotonic() + 60
        while expected < count:
            if time.monotonic() > deadline:
                fail(f"only {expected} of {count} samples within 60 s")
            sample = sub.try_recv()
            if sample is None:
                time.sleep(0.001)
                continue
            data = bytes(sample.payload.to_bytes())
            if len(data) < HEADER.size:
                fail(f"{len(data)} bytes, shorter than the header")
            (magic, version, flags, header_len, tid, seq, length, reserved, stream,
             session_id) = HEADER.unpack_from(data)
            payload = data[header_len:]
            if magic != b"TLYB":
                fail(f"magic {magic!r}")
            if version != 1 or flags != 0 or header_len != 48 or reserved != 0:
                fail(f"version {version} flags {flags} header_len {header_len}")
            if tid != type_id:
                fail(f"type id {tid:016x}, expected {type_id:016x}")
            if length != len(payload) or length != size:
                fail(f"payload_len {length}, {len(payload)} bytes follow, expected {size}")
            if seq != expected:
                fail(f"sequence {seq}, expected {expected}")
            print(json.dumps({"seq": seq, "session": session_id, "stream": stream,
                              "payload_hex": payload.hex()}), flush=True)
            expected += 1
        print("done", flush=True)


if __name__ == "__main__":
    main()
