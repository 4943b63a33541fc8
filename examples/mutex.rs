//! A shared counter in a `Mutex<u64>` incremented by several processes; one of them is
//! killed while it holds the lock, and the next locker is told the lock was abandoned.
//!
//! Run: `cargo run --example mutex`

use std::process::{Command, Stdio};

use tally::{LockError, Mutex};

const WORKERS: u64 = 3;
const EACH: u64 = 10_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("worker") => return worker(&args.next().ok_or("worker needs a name")?),
        Some("dies-holding") => return dies_holding(&args.next().ok_or("needs a name")?),
        _ => {}
    }
    let name = format!("example-counter-{}", std::process::id());
    let counter = Mutex::<u64>::create(&name, 0)?;
    let exe = std::env::current_exe()?;

    // A process takes the lock and is killed holding it.
    let mut victim = Command::new(&exe)
        .args(["dies-holding", &name])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(victim.stdout.take().ok_or("no stdout")?),
        &mut line,
    )?;
    println!("victim (pid {}) says: {}", victim.id(), line.trim());
    victim.kill()?;
    victim.wait()?;

    // Workers increment concurrently; the first to lock finds the dead owner (within
    // one 10 ms slice) and is told.
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| Command::new(&exe).args(["worker", &name]).spawn())
        .collect::<Result<_, _>>()?;
    for mut w in workers {
        assert!(w.wait()?.success(), "a worker failed");
    }
    let total = *counter.lock().map_err(|e| e.to_string())?;
    println!("counter = {total} (the victim added 1, each worker {EACH})");
    assert_eq!(total, 1 + WORKERS * EACH);
    Ok(())
}

fn dies_holding(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let counter = Mutex::<u64>::open(name)?;
    let mut guard = counter.lock().map_err(|e| e.to_string())?;
    *guard += 1;
    println!("holding the lock");
    loop {
        std::thread::park();
    }
}

fn worker(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let counter = Mutex::<u64>::open(name)?;
    for _ in 0..EACH {
        let mut guard = match counter.lock() {
            Ok(g) => g,
            Err(LockError::Abandoned(mut g)) => {
                // A counter is consistent after any single store: clear the mark.
                println!(
                    "pid {}: lock was abandoned by a dead owner; counter = {}",
                    std::process::id(),
                    *g
                );
                g.clear_abandoned();
                g
            }
            Err(e) => return Err(e.to_string().into()),
        };
        *guard += 1;
    }
    Ok(())
}
