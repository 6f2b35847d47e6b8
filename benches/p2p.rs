//! Criterion benches: ping-pong round trip per send mode and size over shared
//! memory, for regression tracking with history (`cargo bench --bench p2p`).
//! A short preset for CI: `cargo bench --bench p2p -- --warm-up-time 0.05
//! --measurement-time 0.1 --sample-size 10`.
//!
//! Criterion times on its own thread, so a background job runs the ranks: rank 0
//! takes "do N round trips of (mode, size)" commands from a channel, tells rank 1,
//! both run them, and rank 0 reports the elapsed time (`iter_custom`).

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use courier::{Comm, Result, BSEND_OVERHEAD};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const MODES: [&str; 10] = [
    "send",
    "bsend",
    "ssend",
    "rsend",
    "isend",
    "ibsend",
    "issend",
    "irsend",
    "sendrecv",
    "send-owned",
];
const SIZES: [usize; 4] = [8, 1024, 64 * 1024, 1024 * 1024];
const STOP: u64 = u64::MAX;

/// Command word sent from rank 0 to rank 1: [mode index, size, iterations].
fn serve(
    comm: &Comm,
    cmds: &Mutex<Receiver<(usize, usize, u64)>>,
    times: &Sender<Duration>,
) -> Result<()> {
    loop {
        let mut cmd = [0u64; 3];
        if comm.rank() == 0 {
            let (m, s, n) = cmds.lock().unwrap().recv().unwrap_or((0, 0, STOP));
            cmd = [m as u64, s as u64, n];
        }
        comm.broadcast(&mut cmd, 0)?;
        if cmd[2] == STOP {
            return Ok(());
        }
        let (mode, size, iters) = (MODES[cmd[0] as usize], cmd[1] as usize, cmd[2]);
        let elapsed = round_trips(comm, mode, size, iters)?;
        if comm.rank() == 0 {
            times.send(elapsed).expect("bench thread waits");
        }
    }
}

fn round_trips(comm: &Comm, mode: &str, size: usize, iters: u64) -> Result<Duration> {
    let (me, peer) = (comm.rank(), 1 - comm.rank());
    let sbuf = vec![1u8; size];
    let mut rbuf = vec![0u8; size];
    let mut owned = Some(vec![0u8; size]);
    let buffered = mode == "bsend" || mode == "ibsend";
    if buffered {
        comm.attach_buffer(2 * (size + BSEND_OVERHEAD))?;
    }
    comm.barrier()?;
    let start = Instant::now();
    for _ in 0..iters {
        match (mode, me) {
            ("send-owned", 0) => {
                comm.send_owned(owned.take().expect("buffer"), peer, 0)?;
                owned = Some(comm.recv_owned(peer, 0)?.0);
            }
            ("send-owned", _) => {
                let (v, _) = comm.recv_owned::<u8>(peer, 0)?;
                comm.send_owned(v, peer, 0)?;
            }
            ("sendrecv", _) => {
                comm.sendrecv(&sbuf, peer, 0, &mut rbuf, peer, 0)?;
            }
            ("rsend" | "irsend", _) => {
                // Post the receive and say so (a 0-byte message), so the peer's
                // ready send is legal; this bench therefore also times that notice.
                comm.scope(|s| {
                    let r = s.irecv(&mut rbuf, peer, 0)?;
                    comm.send::<u8>(&[], peer, 1)?;
                    let rsend = || match mode {
                        "rsend" => comm.rsend(&sbuf, peer, 0),
                        _ => comm.scope(|s| s.irsend(&sbuf, peer, 0)?.wait().map(drop)),
                    };
                    if me == 0 {
                        comm.recv::<u8>(&mut [], peer, 1)?;
                        rsend()?;
                        r.wait()?;
                    } else {
                        r.wait()?;
                        comm.recv::<u8>(&mut [], peer, 1)?;
                        rsend()?;
                    }
                    Ok::<_, courier::Error>(())
                })?;
            }
            (_, _) => {
                let send = |c: &Comm| match mode {
                    "send" => c.send(&sbuf, peer, 0),
                    "bsend" => c.bsend(&sbuf, peer, 0),
                    "ssend" => c.ssend(&sbuf, peer, 0),
                    "ibsend" => c.scope(|s| s.ibsend(&sbuf, peer, 0)?.wait().map(drop)),
                    "issend" => c.scope(|s| s.issend(&sbuf, peer, 0)?.wait().map(drop)),
                    _ => c.scope(|s| s.isend(&sbuf, peer, 0)?.wait().map(drop)),
                };
                if me == 0 {
                    send(comm)?;
                    comm.recv(&mut rbuf, peer, 0)?;
                } else {
                    comm.recv(&mut rbuf, peer, 0)?;
                    send(comm)?;
                }
            }
        }
    }
    let elapsed = start.elapsed();
    if buffered {
        comm.detach_buffer()?;
    }
    Ok(elapsed)
}

fn p2p(c: &mut Criterion) {
    let (cmd_tx, cmd_rx) = channel();
    let (time_tx, time_rx) = channel();
    let cmd_rx = Mutex::new(cmd_rx);
    let job = std::thread::spawn(move || {
        courier::Runtime::new()
            .ranks(2)
            .run(|comm| serve(comm, &cmd_rx, &time_tx))
    });
    for (m, mode) in MODES.iter().enumerate() {
        let mut group = c.benchmark_group(format!("pingpong/{mode}"));
        for size in SIZES {
            group.throughput(Throughput::Bytes(2 * size as u64));
            group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
                b.iter_custom(|iters| {
                    cmd_tx.send((m, size, iters)).expect("job running");
                    time_rx.recv().expect("job reports")
                })
            });
        }
        group.finish();
    }
    drop(cmd_tx);
    job.join().expect("job thread").expect("bench job");
}

criterion_group!(benches, p2p);
criterion_main!(benches);
