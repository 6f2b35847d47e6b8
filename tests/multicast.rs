//! Ordered multicast: every algorithm and order verified over random seeds,
//! rank counts (2 to 8, more ranks than cores) and random network delays; a
//! deliberately broken order is caught; unicast counts match theory.

mod common;

use common::{run_ok, run_with};
use courier::{Error, Runtime};
use courier_kernels::multicast::{self, Algorithm, Config, Order, Report};

fn multicast(ranks: usize, cfg: Config) -> Report {
    run_ok(ranks, move |comm| multicast::run(comm, &cfg)).swap_remove(0)
}

const KINDS: [(Order, Algorithm); 6] = [
    (Order::Total, Algorithm::Lamport),
    (Order::Total, Algorithm::Sequencer),
    (Order::Total, Algorithm::Ring),
    (Order::Causal, Algorithm::Lamport),
    (Order::Fifo, Algorithm::Lamport),
    (Order::None, Algorithm::Lamport),
];

#[test]
fn every_algorithm_is_verified_under_random_delays() {
    for (i, (order, algorithm)) in KINDS.into_iter().enumerate() {
        for (j, ranks) in [2, 3, 5, 8].into_iter().enumerate() {
            for batch in [false, true] {
                let seed = (i * 10 + j) as u64;
                let mut cfg = Config::new(order, algorithm, 40);
                cfg.delay_us = 100;
                cfg.seed = seed;
                cfg.batch_acks = batch;
                let r = multicast(ranks, cfg);
                assert!(
                    r.verified,
                    "{order:?}/{algorithm} on {ranks} ranks, seed {seed}: {:?}",
                    r.divergence
                );
                assert_eq!(r.delivered, 40 * ranks as u64);
            }
        }
    }
}

#[test]
fn delivering_on_receipt_is_caught_by_the_verifier() {
    // Random delays reorder messages between pairs; Lamport order and causal
    // order delivered on receipt then diverge. A run may by chance not
    // reorder anything, so a few seeds are tried; each must run to the end.
    for order in [Order::Total, Order::Causal] {
        let caught = (0..5).find_map(|seed| {
            let mut cfg = Config::new(order, Algorithm::Lamport, 200);
            cfg.delay_us = 300;
            cfg.seed = seed;
            cfg.sabotage = true;
            let r = multicast(4, cfg);
            (!r.verified).then_some(r.divergence)
        });
        let what = caught
            .flatten()
            .unwrap_or_else(|| panic!("{order:?}: a broken order was never caught"));
        let expected = if order == Order::Total {
            "total order"
        } else {
            "causal"
        };
        assert!(what.contains(expected), "{what}");
    }
}

#[test]
fn unicasts_per_multicast_match_theory() {
    for n in [2usize, 3, 4, 5] {
        let m = (n - 1) as f64;
        let lamport = multicast(n, Config::new(Order::Total, Algorithm::Lamport, 30));
        assert_eq!(lamport.messages_per_multicast, m + m * m, "lamport on {n}");
        assert_eq!(lamport.theory_messages_per_multicast, m + m * m);
        let sequencer = multicast(n, Config::new(Order::Total, Algorithm::Sequencer, 30));
        assert!((sequencer.messages_per_multicast - (m + m / n as f64)).abs() < 1e-12);
        let ring = multicast(n, Config::new(Order::Total, Algorithm::Ring, 30));
        let tokens = ring.token_passes_per_multicast.unwrap();
        assert!(
            (ring.messages_per_multicast - tokens - m).abs() < 1e-12,
            "ring on {n}"
        );
        for order in [Order::Causal, Order::Fifo, Order::None] {
            let r = multicast(n, Config::new(order, Algorithm::Lamport, 30));
            assert_eq!(r.messages_per_multicast, m, "{order:?} on {n}");
        }
        let mut batched = Config::new(Order::Total, Algorithm::Lamport, 30);
        batched.batch_acks = true;
        let b = multicast(n, batched);
        assert!(b.verified && b.messages_per_multicast <= m + m * m);
    }
}

#[test]
fn bad_configurations_are_errors_not_panics() {
    let mut small = Config::new(Order::Total, Algorithm::Lamport, 10);
    small.size = 4;
    let mut sabotaged_sequencer = Config::new(Order::Total, Algorithm::Sequencer, 10);
    sabotaged_sequencer.sabotage = true;
    for cfg in [
        Config::new(Order::Fifo, Algorithm::Ring, 0),
        small,
        sabotaged_sequencer,
    ] {
        let got = run_with(Runtime::new().ranks(2), move |comm| {
            multicast::run(comm, &cfg)
        });
        match got {
            Err(Error::RankFailed { source, .. }) => {
                assert!(matches!(*source, Error::InvalidConfig(_)), "{source}")
            }
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }
}
