//! Bad input gives a precise error, never a panic or a hang; a failed rank ends
//! the run with its rank and message.

mod common;

use std::time::{Duration, Instant};

use common::{run, run_ok};
use courier::{Error, ANY_SOURCE, ANY_TAG, TAG_UB};

#[test]
fn invalid_ranks_and_tags_are_rejected_before_anything_is_sent() {
    run_ok(2, |comm| {
        assert_eq!(
            comm.send(&[1u8], 2, 0),
            Err(Error::InvalidRank { rank: 2, size: 2 })
        );
        assert_eq!(
            comm.recv(&mut [0u8], 5, 0),
            Err(Error::InvalidRank { rank: 5, size: 2 })
        );
        assert_eq!(
            comm.ssend(&[1u8], 1, -1),
            Err(Error::InvalidTag { tag: -1 })
        );
        assert_eq!(
            comm.send(&[1u8], 1, TAG_UB + 1),
            Err(Error::InvalidTag { tag: TAG_UB + 1 })
        );
        assert_eq!(
            comm.iprobe(ANY_SOURCE, -3),
            Err(Error::InvalidTag { tag: -3 })
        );
        assert_eq!(
            comm.bsend(&[1u8], 9, 0),
            Err(Error::InvalidRank { rank: 9, size: 2 })
        );
        assert_eq!(
            comm.send_owned(vec![1u8], 3, 0),
            Err(Error::InvalidRank { rank: 3, size: 2 })
        );
        assert_eq!(
            comm.node_of(2),
            Err(Error::InvalidRank { rank: 2, size: 2 })
        );
        let (out, mut inc) = ([1u8], [0u8]);
        comm.scope(|s| {
            assert_eq!(
                s.isend(&out, 7, 0).unwrap_err(),
                Error::InvalidRank { rank: 7, size: 2 }
            );
            assert_eq!(
                s.irecv(&mut inc, 0, TAG_UB + 5).unwrap_err(),
                Error::InvalidTag { tag: TAG_UB + 5 }
            );
        });
        comm.barrier()?;
        assert_eq!(
            comm.iprobe(ANY_SOURCE, ANY_TAG)?,
            None,
            "a rejected call sent something"
        );
        comm.barrier()?; // both have looked before either sends for real
        comm.send(&[1u8], 1 - comm.rank(), TAG_UB)?; // the largest tag is fine
        comm.recv(&mut [0u8], ANY_SOURCE, TAG_UB)?;
        Ok(())
    });
}

#[test]
fn truncation_consumes_the_message_and_leaves_the_buffer() {
    for size in [10usize, 100_000] {
        run_ok(2, move |comm| {
            if comm.rank() == 0 {
                comm.send(&vec![1u8; size], 1, 0)?;
                comm.send(&[2u8; 3], 1, 0)?;
            } else {
                let mut small = vec![0u8; size - 1];
                assert_eq!(
                    comm.recv(&mut small, 0, 0),
                    Err(Error::Truncated {
                        message: size,
                        buffer: size - 1
                    })
                );
                assert!(
                    small.iter().all(|&b| b == 0),
                    "truncated receive wrote its buffer"
                );
                let mut next = [0u8; 3];
                comm.recv(&mut next, 0, 0)?;
                assert_eq!(next, [2; 3]);
            }
            Ok(())
        });
    }
}

#[test]
fn a_length_that_is_not_whole_elements_is_a_type_mismatch() {
    run_ok(2, |comm| {
        if comm.rank() == 0 {
            comm.send(&[1u8; 6], 1, 0)?;
            comm.send(&[1u8; 6], 1, 0)?;
            comm.send(&[1u8; 18], 1, 0)?;
            comm.send(&[1u8; 24], 1, 0)?;
        } else {
            let mut v = [0u32; 4];
            let err = comm.recv(&mut v, 0, 0).unwrap_err();
            assert!(
                matches!(err, Error::TypeMismatch { bytes: 6, size: 4, align: 4, type_name } if type_name == "u32"),
                "{err:?}"
            );
            assert_eq!(v, [0; 4]);
            assert!(matches!(
                comm.recv_owned::<u64>(0, 0),
                Err(Error::TypeMismatch {
                    bytes: 6,
                    size: 8,
                    ..
                })
            ));
            // An element size that is not a power of two (12 bytes).
            let mut triples = [[0u32; 3]; 2];
            assert!(matches!(
                comm.recv(&mut triples, 0, 0),
                Err(Error::TypeMismatch {
                    bytes: 18,
                    size: 12,
                    ..
                })
            ));
            assert_eq!(comm.recv(&mut triples, 0, 0)?.count::<[u32; 3]>(), 2);
        }
        Ok(())
    });
}

#[test]
fn an_error_returned_by_a_rank_is_reported_with_its_rank() {
    let err = run(3, |comm| {
        if comm.rank() == 2 {
            comm.send(&[0u8], 99, 0)?;
        }
        comm.barrier()?;
        Ok(())
    })
    .unwrap_err();
    assert_eq!(
        err,
        Error::RankFailed {
            rank: 2,
            source: Box::new(Error::InvalidRank { rank: 99, size: 3 })
        }
    );
}

#[test]
fn a_panicking_rank_ends_the_run_while_others_block_in_recv_and_barrier() {
    let start = Instant::now();
    let err = run(8, |comm| {
        match comm.rank() {
            5 => {
                std::thread::sleep(Duration::from_millis(50));
                panic!("rank five gives up");
            }
            r if r % 2 == 0 => {
                comm.recv(&mut [0u8; 4], ANY_SOURCE, ANY_TAG)?; // never satisfied
            }
            _ => comm.barrier()?, // never complete: rank 5 is missing
        }
        Ok(())
    })
    .unwrap_err();
    assert_eq!(
        err,
        Error::RankPanicked {
            rank: 5,
            message: "rank five gives up".into()
        }
    );
    // Behaviour, not a benchmark: "returns at all" is checked by the deadline in
    // common::run; this bound only says blocked ranks were released promptly.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn blocked_operations_of_other_ranks_return_peer_failed() {
    let results = run(3, |comm| {
        if comm.rank() == 0 {
            panic!("boom");
        }
        // Blocked in a rendezvous send and in a probe, both released.
        let r = if comm.rank() == 1 {
            comm.ssend(&[1u8], 0, 0)
        } else {
            comm.probe(0, 0).map(drop)
        };
        assert_eq!(r, Err(Error::PeerFailed { rank: 0 }));
        Ok(())
    });
    assert!(matches!(results, Err(Error::RankPanicked { rank: 0, .. })));
}

#[test]
fn collectives_reject_inconsistent_buffers() {
    run_ok(2, |comm| {
        let mut out = [0u32; 3];
        assert_eq!(
            comm.all_reduce(&[1u32, 2], &mut out, |a, b| a + b),
            Err(Error::CountMismatch {
                what: "all_reduce receive buffer",
                expected: 2,
                got: 3
            })
        );
        assert!(matches!(
            comm.all_gather(&[1u32], &mut out),
            Err(Error::CountMismatch { .. })
        ));
        assert!(matches!(
            comm.all_to_all(&[1u32; 3], &mut out),
            Err(Error::CountMismatch { .. })
        ));
        assert_eq!(
            comm.broadcast(&mut out, 2),
            Err(Error::InvalidRank { rank: 2, size: 2 })
        );
        Ok(())
    });
}

#[test]
fn waiting_on_a_rank_that_has_finished_is_an_error_not_a_hang() {
    run_ok(2, |comm| {
        if comm.rank() == 1 {
            comm.send(&[7u8], 0, 0)?;
            return Ok(()); // finishes; its message is still delivered
        }
        std::thread::sleep(Duration::from_millis(20));
        let mut b = [0u8];
        comm.recv(&mut b, 1, 0)?;
        assert_eq!(b, [7]);
        assert_eq!(
            comm.recv(&mut b, 1, 0),
            Err(Error::PeerFinished { rank: 1 })
        );
        assert_eq!(comm.probe(1, ANY_TAG), Err(Error::PeerFinished { rank: 1 }));
        assert!(matches!(
            comm.mprobe(1, 0),
            Err(Error::PeerFinished { rank: 1 })
        ));
        // Twice: the first leaves its message behind, unreceived, and must not
        // leave the next one waiting for it.
        for _ in 0..2 {
            assert_eq!(
                comm.ssend(&[1u8], 1, 0),
                Err(Error::PeerFinished { rank: 1 })
            );
        }
        assert_eq!(
            comm.send(&vec![1u8; 100_000], 1, 0),
            Err(Error::PeerFinished { rank: 1 })
        );
        let mut inc = [0u8];
        comm.scope(|s| {
            let r = s.irecv(&mut inc, 1, ANY_TAG)?;
            assert_eq!(r.wait(), Err(Error::PeerFinished { rank: 1 }));
            let mut polled = s.irecv(&mut b, 1, 5)?;
            assert_eq!(polled.test(), Err(Error::PeerFinished { rank: 1 }));
            Ok::<_, Error>(())
        })?;
        // Any-source receives are not affected: another thread of this rank
        // could still send to it.
        comm.send(&[9u8], 0, 3)?;
        comm.recv(&mut b, ANY_SOURCE, 3)?;
        assert_eq!(b, [9]);
        Ok(())
    });
}

#[test]
fn a_rank_that_skips_a_collective_fails_the_run_instead_of_hanging_it() {
    let err = run(3, |comm| {
        if comm.rank() == 2 {
            return Ok(()); // forgets the barrier
        }
        comm.barrier()
    })
    .unwrap_err();
    assert!(
        matches!(&err, Error::RankFailed { source, .. } if **source == Error::PeerFinished { rank: 2 }),
        "{err:?}"
    );
}

#[test]
fn a_scope_whose_receive_gave_up_on_a_failed_rank_still_ends() {
    let err = run(2, |comm| {
        if comm.rank() == 0 {
            panic!("gone");
        }
        let mut buf = [0u8; 4];
        comm.scope(|s| {
            let r = s.irecv(&mut buf, 0, 0)?;
            assert_eq!(r.wait(), Err(Error::PeerFailed { rank: 0 }));
            Ok::<_, Error>(())
        })?; // must return: the withdrawn receive is settled
        assert_eq!(buf, [0; 4]);
        Ok(())
    })
    .unwrap_err();
    assert!(
        matches!(err, Error::RankPanicked { rank: 0, .. }),
        "{err:?}"
    );
}
