//! The wire format read outside Rust: a plain Zenoh subscriber in Python (the
//! `eclipse-zenoh` package, the same Zenoh version as the bridge) receives what
//! `tally-bridge export` publishes and decodes every header field and payload.
//!
//! The interpreter is `$TALLY_BRIDGE_PYTHON` (default `python3`). Without the
//! `zenoh` module the test fails, saying how to install it, unless
//! `TALLY_BRIDGE_SKIP_PYTHON=1`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::Duration;

use common::{Bridge, Guard, QUIET, assert_gone, free_port, unique};
use tally::{Message, Ring};

/// The eclipse-zenoh version matching the bridge's zenoh crate.
const ZENOH_VERSION: &str = "1.10.2";

#[test]
fn a_python_zenoh_subscriber_decodes_the_samples() {
    if std::env::var("TALLY_BRIDGE_SKIP_PYTHON").is_ok_and(|v| v == "1") {
        eprintln!("skipped: TALLY_BRIDGE_SKIP_PYTHON=1");
        return;
    }
    let python = std::env::var("TALLY_BRIDGE_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import zenoh"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e} (set TALLY_BRIDGE_PYTHON)"));
    assert!(
        probe.status.success(),
        "`{python} -c 'import zenoh'` failed: install it with `pip install eclipse-zenoh=={ZENOH_VERSION}` \
         (e.g. python3 -m venv target/pyzenoh && target/pyzenoh/bin/pip install eclipse-zenoh=={ZENOH_VERSION}, \
         then TALLY_BRIDGE_PYTHON=$PWD/target/pyzenoh/bin/python, an absolute path), or set TALLY_BRIDGE_SKIP_PYTHON=1 to skip: {}",
        String::from_utf8_lossy(&probe.stderr)
    );

    const N: u64 = 200;
    let a = Guard(unique("py"));
    let key = format!("tally/test/{}", a.0);
    let port = free_port();
    let endpoint = format!("tcp/127.0.0.1:{port}");
    let ring = Ring::<[u64; 2]>::create(&a.0, 64).unwrap();
    let mut args = vec![
        "export", &a.0, "--key", &key, "--listen", &endpoint, "--no-ack",
    ];
    args.extend(QUIET);
    let mut exporter = Bridge::spawn(&args);
    exporter.expect("ready", Duration::from_secs(20));

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/sub.py");
    let type_id = format!("{:016x}", <[u64; 2]>::schema().canonical_hash());
    let mut sub = Command::new(&python)
        .args([script, &endpoint, &key, &N.to_string(), &type_id, "16"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, lines) = channel();
    let out = sub.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(60))
            .expect("a line from sub.py")
    };
    assert_eq!(next(), "ready");
    let mut tx = ring.producer().unwrap();
    for i in 0..N {
        tx.send([i, !i]).unwrap();
    }
    let mut stream = None;
    for i in 0..N {
        let v: serde_json::Value = serde_json::from_str(&next()).unwrap();
        assert_eq!(v["seq"], i);
        let mut payload = i.to_ne_bytes().to_vec();
        payload.extend((!i).to_ne_bytes());
        let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(v["payload_hex"], hex.as_str(), "payload of {i}");
        let s = v["stream"].as_u64().unwrap();
        assert_eq!(*stream.get_or_insert(s), s, "one stream");
    }
    assert_eq!(next(), "done");
    assert!(sub.wait().unwrap().success());
    let exp = exporter.terminate();
    assert_eq!(exp["published"], N);
    drop((tx, ring));
    assert_gone(&a.0);
}
