//! Criterion benches of the gossip kernels (`cargo bench --bench gossip`):
//! push-pull anti-entropy on 10⁶ nodes to full coverage, on 2 ranks, next to
//! the single-threaded simulator taking the same contacts (the limit). Reported
//! as node contacts per second. Quick preset for CI: `cargo bench --bench gossip
//! -- --warm-up-time 0.05 --measurement-time 0.1 --sample-size 10`.
//!
//! The kernel is timed by its own clock (`wall_s`, from a barrier after setup to
//! the end of the last round), so rank start-up is not in the figure.

use std::time::Duration;

use courier::Runtime;
use courier_kernels::gossip::{self, simulate, Config, Protocol};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const NODES: u64 = 1_000_000;

fn push_pull(c: &mut Criterion) {
    let contacts = simulate::push_pull(NODES, 1).contacts;
    let mut g = c.benchmark_group("push-pull-1M");
    g.throughput(Throughput::Elements(contacts));
    g.sample_size(10);
    g.bench_function("simulator-1-thread", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| Duration::from_secs_f64(simulate::push_pull(NODES, 1).wall_s))
                .sum()
        })
    });
    for ranks in [1, 2] {
        g.bench_function(format!("kernel-{ranks}-ranks"), |b| {
            b.iter_custom(|iters| {
                let cfg = Config::new(Protocol::PushPull, NODES).seed(1);
                (0..iters)
                    .map(|_| {
                        let reports = Runtime::new()
                            .ranks(ranks)
                            .run(|comm| gossip::run(comm, &cfg))
                            .expect("the kernel runs");
                        Duration::from_secs_f64(reports[0].wall_s)
                    })
                    .sum()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, push_pull);
criterion_main!(benches);
