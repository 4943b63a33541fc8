//! A pool of N resources shared by worker processes; one worker is killed while it
//! holds a permit, and its permit comes back.
//!
//! Run: `cargo run --example semaphore`

use std::process::{Command, Stdio};
use std::time::Duration;

use tally::Semaphore;

const POOL: u32 = 2;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("worker") {
        return worker(&args.next().ok_or("worker needs a name")?, args.next());
    }
    let name = format!("example-pool-{}", std::process::id());
    let pool = Semaphore::create_resource(&name, POOL)?;
    println!("pool {name}: {} of {POOL} permits available", pool.count());

    let exe = std::env::current_exe()?;
    // One worker takes a permit and stops there, holding it.
    let mut victim = Command::new(&exe)
        .args(["worker", &name, "hold"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(victim.stdout.take().ok_or("no stdout")?),
        &mut line,
    )?;
    println!("victim (pid {}) says: {}", victim.id(), line.trim());
    println!("{} of {POOL} permits available", pool.count());

    victim.kill()?; // SIGKILL: no destructor runs, the permit is never released
    victim.wait()?;
    println!("victim killed while holding its permit");

    // Two well-behaved workers now need both permits: the dead worker's comes back
    // through the sweep (run by the next open, or here explicitly).
    pool.sweep()?;
    println!(
        "after the sweep: {} of {POOL} permits available",
        pool.count()
    );
    let workers: Vec<_> = (0..2)
        .map(|_| Command::new(&exe).args(["worker", &name]).spawn())
        .collect::<Result<_, _>>()?;
    for mut w in workers {
        assert!(w.wait()?.success(), "a worker failed");
    }
    assert_eq!(pool.count(), POOL, "every permit is back");
    println!("all {POOL} permits back; done");
    Ok(())
}

fn worker(name: &str, mode: Option<String>) -> Result<(), Box<dyn std::error::Error>> {
    let pool = Semaphore::open(name)?;
    let permit = pool.acquire_timeout(Duration::from_secs(5))?;
    if mode.as_deref() == Some("hold") {
        println!("holding a permit");
        std::mem::forget(permit); // (as good as dying: the sweep returns it)
        loop {
            std::thread::park();
        }
    }
    // Use the resource, then return the permit by dropping it.
    std::thread::sleep(Duration::from_millis(50));
    drop(permit);
    Ok(())
}
