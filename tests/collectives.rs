//! Collectives against a sequential reference, for several sizes and rank counts.

mod common;

use common::{run_ok, RANK_COUNTS};

/// Deterministic test data: element `i` of rank `r`'s contribution.
fn val(r: usize, i: usize) -> u64 {
    (r as u64 + 1) * 1_000_003 + i as u64 * 7919
}

/// 2×2 matrix product: associative but not commutative, so it checks that
/// reductions combine in rank order.
fn matmul(a: [u64; 4], b: [u64; 4]) -> [u64; 4] {
    let m = |x: u64, y: u64| x.wrapping_mul(y);
    [
        m(a[0], b[0]).wrapping_add(m(a[1], b[2])),
        m(a[0], b[1]).wrapping_add(m(a[1], b[3])),
        m(a[2], b[0]).wrapping_add(m(a[3], b[2])),
        m(a[2], b[1]).wrapping_add(m(a[3], b[3])),
    ]
}

fn mat(r: usize, i: usize) -> [u64; 4] {
    [val(r, i) % 97, 1, (r as u64) % 5, val(r, i + 1) % 89]
}

const SIZES: [usize; 4] = [0, 1, 7, 5000];

#[test]
fn barrier_releases_no_rank_before_all_arrive() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    for p in RANK_COUNTS {
        let arrived = Arc::new(AtomicUsize::new(0));
        run_ok(p, move |comm| {
            for round in 1..=20 {
                arrived.fetch_add(1, SeqCst);
                comm.barrier()?;
                assert!(
                    arrived.load(SeqCst) >= round * p,
                    "left round {round} early"
                );
                comm.barrier()?;
            }
            Ok(())
        });
    }
}

#[test]
fn broadcast_from_every_root() {
    for p in RANK_COUNTS {
        for n in SIZES {
            run_ok(p, move |comm| {
                for root in 0..comm.size() {
                    let mut buf: Vec<u64> = if comm.rank() == root {
                        (0..n).map(|i| val(root, i)).collect()
                    } else {
                        vec![0; n]
                    };
                    comm.broadcast(&mut buf, root)?;
                    assert_eq!(buf, (0..n).map(|i| val(root, i)).collect::<Vec<_>>());
                }
                Ok(())
            });
        }
    }
}

#[test]
fn reduce_and_all_reduce_combine_in_rank_order() {
    for p in RANK_COUNTS {
        for n in SIZES {
            run_ok(p, move |comm| {
                let p = comm.size();
                let mine: Vec<[u64; 4]> = (0..n).map(|i| mat(comm.rank(), i)).collect();
                let expected: Vec<[u64; 4]> = (0..n)
                    .map(|i| (1..p).fold(mat(0, i), |acc, r| matmul(acc, mat(r, i))))
                    .collect();
                for root in [0, p - 1, p / 2] {
                    let mut out = if comm.rank() == root {
                        vec![[0u64; 4]; n]
                    } else {
                        vec![]
                    };
                    comm.reduce(&mine, &mut out, root, matmul)?;
                    if comm.rank() == root {
                        assert_eq!(out, expected, "reduce to root {root}");
                    }
                }
                let mut all = vec![[0u64; 4]; n];
                comm.all_reduce(&mine, &mut all, matmul)?;
                assert_eq!(all, expected);
                let mut sum = vec![0u64; n];
                let ones: Vec<u64> = (0..n).map(|i| val(comm.rank(), i)).collect();
                comm.all_reduce(&ones, &mut sum, |a, b| a.wrapping_add(b))?;
                assert_eq!(
                    sum,
                    (0..n)
                        .map(|i| (0..p).map(|r| val(r, i)).sum())
                        .collect::<Vec<u64>>()
                );
                Ok(())
            });
        }
    }
}

#[test]
fn gather_and_all_gather_concatenate_in_rank_order() {
    for p in RANK_COUNTS {
        for n in SIZES {
            run_ok(p, move |comm| {
                let p = comm.size();
                let mine: Vec<u64> = (0..n).map(|i| val(comm.rank(), i)).collect();
                let expected: Vec<u64> = (0..p)
                    .flat_map(|r| (0..n).map(move |i| val(r, i)))
                    .collect();
                for root in [0, p - 1] {
                    let mut out = if comm.rank() == root {
                        vec![0; n * p]
                    } else {
                        vec![]
                    };
                    comm.gather(&mine, &mut out, root)?;
                    if comm.rank() == root {
                        assert_eq!(out, expected);
                    }
                }
                let mut all = vec![0; n * p];
                comm.all_gather(&mine, &mut all)?;
                assert_eq!(all, expected);
                Ok(())
            });
        }
    }
}

#[test]
fn scatter_hands_out_chunks_in_rank_order() {
    for p in RANK_COUNTS {
        for n in SIZES {
            run_ok(p, move |comm| {
                let p = comm.size();
                for root in [0, p - 1] {
                    let send: Vec<u64> = if comm.rank() == root {
                        (0..p)
                            .flat_map(|r| (0..n).map(move |i| val(r, i)))
                            .collect()
                    } else {
                        vec![]
                    };
                    let mut out = vec![0; n];
                    comm.scatter(&send, &mut out, root)?;
                    assert_eq!(out, (0..n).map(|i| val(comm.rank(), i)).collect::<Vec<_>>());
                }
                Ok(())
            });
        }
    }
}

#[test]
fn all_to_all_transposes() {
    for p in RANK_COUNTS {
        for n in SIZES {
            run_ok(p, move |comm| {
                let (me, p) = (comm.rank(), comm.size());
                // Chunk j of rank i holds val(i * p + j, ..).
                let send: Vec<u64> = (0..p)
                    .flat_map(|j| (0..n).map(move |k| val(me * p + j, k)))
                    .collect();
                let mut recv = vec![0; n * p];
                comm.all_to_all(&send, &mut recv)?;
                let expected: Vec<u64> = (0..p)
                    .flat_map(|i| (0..n).map(move |k| val(i * p + me, k)))
                    .collect();
                assert_eq!(recv, expected);
                Ok(())
            });
        }
    }
}

#[test]
fn collectives_do_not_match_point_to_point_traffic() {
    run_ok(3, |comm| {
        let me = comm.rank();
        // A pending user message with the same source on the same communicator
        // must not be taken by the broadcast, nor the broadcast by the receive.
        if me == 0 {
            comm.send(&[111u64], 1, 2)?;
        }
        let mut b = [if me == 0 { 5u64 } else { 0 }];
        comm.broadcast(&mut b, 0)?;
        assert_eq!(b, [5]);
        if me == 1 {
            let mut m = [0u64];
            comm.recv(&mut m, 0, courier::ANY_TAG)?;
            assert_eq!(m, [111]);
        }
        Ok(())
    });
}
