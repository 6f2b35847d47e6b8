//! Where each send mode synchronizes, shown by behaviour: what has happened at
//! the receiver when a send returns.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{run, run_ok, DEADLINE, RANK_COUNTS};
use courier::{Error, ANY_SOURCE, ANY_TAG, BSEND_OVERHEAD};

/// Spins until `flag` is set; fails the test instead of hanging.
fn await_flag(flag: &AtomicBool) {
    let start = Instant::now();
    while !flag.load(SeqCst) {
        assert!(
            start.elapsed() < DEADLINE,
            "flag never set: the peer is stuck"
        );
        sleep(Duration::from_millis(1));
    }
}

/// Two flags, unset: one rank tells the other where it is while that one is
/// away from the runtime (the runtime's own messages would let it catch up).
fn flag_pair() -> (Arc<AtomicBool>, Arc<AtomicBool>) {
    (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    )
}

#[test]
fn ssend_does_not_return_before_the_receive_is_posted() {
    for size in [8usize, 1 << 20] {
        let posted = Arc::new(AtomicBool::new(false));
        run_ok(2, move |comm| {
            if comm.rank() == 0 {
                comm.ssend(&vec![7u8; size], 1, 0)?;
                assert!(
                    posted.load(SeqCst),
                    "ssend of {size} B returned before the receive was posted"
                );
            } else {
                sleep(Duration::from_millis(100));
                posted.store(true, SeqCst);
                let mut buf = vec![0u8; size];
                comm.recv(&mut buf, 0, 0)?;
                assert!(buf.iter().all(|&b| b == 7));
            }
            Ok(())
        });
    }
}

/// A tiny ssend travels in the pair's fastbox; a probe at the receiver moves it
/// into the receiver's queue unmatched. The ssend must still wait for the
/// receive, then return; and a run of them (each matched at once, or after a
/// probe) keeps its order.
#[test]
fn tiny_ssend_waits_for_the_receive_even_once_its_message_is_queued() {
    let posted = Arc::new(AtomicBool::new(false));
    run_ok(2, move |comm| {
        if comm.rank() == 0 {
            comm.ssend(&[5u64], 1, 3)?;
            assert!(
                posted.load(SeqCst),
                "ssend returned before the receive was posted"
            );
            for i in 0..500u64 {
                comm.ssend(&[i], 1, (i % 2) as i32)?;
            }
        } else {
            let start = Instant::now();
            // The probe drains the fastbox: the message is queued, not matched.
            while comm.iprobe(0, 3)?.is_none() {
                assert!(start.elapsed() < DEADLINE, "the ssend never arrived");
            }
            sleep(Duration::from_millis(50));
            posted.store(true, SeqCst);
            let mut b = [0u64];
            comm.recv(&mut b, 0, 3)?;
            assert_eq!(b, [5]);
            for i in 0..500u64 {
                if i % 7 == 0 {
                    comm.probe(0, ANY_TAG)?;
                }
                let st = comm.recv(&mut b, 0, ANY_TAG)?;
                assert_eq!((b[0], st.tag), (i, (i % 2) as i32), "overtaken");
            }
        }
        Ok(())
    });
}

/// Crossed synchronous sends, one rank's receive posted first: rank 1's tiny
/// `ssend` reaches rank 0 around the time rank 0 posts the receive it
/// matches, and rank 0 then `ssend`s too (tiny, or large) before waiting on
/// that receive. MPI matches the first `ssend` to the posted receive, so
/// neither send may wait for the other: however the message waited at rank 0
/// (a fastbox it landed in just after the receive was posted), the wait of a
/// synchronous send must still let its own rank's posted receives match it.
#[test]
fn a_waiting_ssend_still_matches_its_ranks_posted_receives() {
    for size in [8usize, 1 << 16] {
        run_ok(2, move |comm| {
            if comm.rank() == 0 {
                let mut tiny = [0u64];
                // Rank 1's ssend is in flight (or waiting) by now.
                sleep(Duration::from_millis(20));
                comm.scope(|s| {
                    let r = s.irecv(&mut tiny, 1, 0)?;
                    comm.ssend(&vec![7u8; size], 1, 1)?;
                    r.wait()
                })?;
                assert_eq!(tiny, [9]);
            } else {
                comm.ssend(&[9u64], 0, 0)?;
                let mut inc = vec![0u8; size];
                comm.recv(&mut inc, 0, 1)?;
                assert!(inc.iter().all(|&b| b == 7));
            }
            Ok(())
        });
    }
}

/// As above with `detach_buffer` waiting for rank 1 to receive a buffered
/// send, while rank 1's `ssend` waits for rank 0's posted receive.
#[test]
fn a_detach_waiting_for_delivery_still_matches_its_ranks_posted_receives() {
    run_ok(2, |comm| {
        if comm.rank() == 0 {
            let mut tiny = [0u64];
            comm.attach_buffer(100 + BSEND_OVERHEAD)?;
            sleep(Duration::from_millis(20));
            comm.scope(|s| {
                let r = s.irecv(&mut tiny, 1, 0)?;
                comm.bsend(&[7u8; 100], 1, 1)?;
                comm.detach_buffer()?;
                r.wait()
            })?;
            assert_eq!(tiny, [9]);
        } else {
            comm.ssend(&[9u64], 0, 0)?;
            let mut inc = [0u8; 100];
            comm.recv(&mut inc, 0, 1)?;
            assert_eq!(inc, [7; 100]);
        }
        Ok(())
    });
}

#[test]
fn issend_request_stays_pending_until_the_receive_is_posted() {
    let posted = Arc::new(AtomicBool::new(false));
    run_ok(2, move |comm| {
        if comm.rank() == 0 {
            let data = [1u32, 2, 3];
            comm.scope(|s| {
                let mut r = s.issend(&data, 1, 4)?;
                assert_eq!(
                    r.test()?,
                    None,
                    "issend complete before the receiver matched"
                );
                r.wait()?;
                assert!(posted.load(SeqCst));
                Ok(())
            })
        } else {
            sleep(Duration::from_millis(50));
            posted.store(true, SeqCst);
            let mut buf = [0u32; 3];
            comm.recv(&mut buf, 0, 4)?;
            assert_eq!(buf, [1, 2, 3]);
            Ok(())
        }
    });
}

/// Tiny issends: the first of a run travels in the pair's fastbox, the others
/// (its token still held) through the mailbox behind it. None completes before
/// its receive is posted, not even once a probe has queued it; they arrive in
/// order; and a leaked request is still waited for by its scope.
#[test]
fn tiny_issends_complete_only_once_received_and_keep_their_order() {
    let posted = Arc::new(AtomicUsize::new(0));
    run_ok(2, move |comm| {
        if comm.rank() == 0 {
            let data: Vec<[u64; 1]> = (0..4).map(|i| [i]).collect();
            comm.scope(|s| {
                let mut reqs = Vec::new();
                for d in &data {
                    reqs.push(s.issend(d, 1, 6)?);
                }
                assert_eq!(reqs[0].test()?, None, "issend complete before its receive");
                for (i, r) in reqs.into_iter().enumerate() {
                    r.wait()?;
                    assert!(
                        posted.load(SeqCst) > i,
                        "issend {i} complete before its receive"
                    );
                }
                Ok::<_, Error>(())
            })?;
            let leaked = [9u64];
            comm.scope(|s| {
                std::mem::forget(s.issend(&leaked, 1, 7)?);
                Ok::<_, Error>(())
            })?;
            assert_eq!(
                posted.load(SeqCst),
                5,
                "the scope ended before the leaked issend matched"
            );
        } else {
            let start = Instant::now();
            // The probe drains the fastbox: the first message is queued, unmatched.
            while comm.iprobe(0, 6)?.is_none() {
                assert!(start.elapsed() < DEADLINE, "the issend never arrived");
            }
            sleep(Duration::from_millis(30));
            let mut b = [0u64];
            for i in 0..4u64 {
                posted.store(i as usize + 1, SeqCst);
                comm.recv(&mut b, 0, 6)?;
                assert_eq!(b, [i], "overtaken");
            }
            sleep(Duration::from_millis(30));
            posted.store(5, SeqCst);
            comm.recv(&mut b, 0, 7)?;
            assert_eq!(b, [9]);
        }
        Ok(())
    });
}

#[test]
fn small_standard_send_returns_before_the_receive_is_posted() {
    let sent = Arc::new(AtomicBool::new(false));
    run_ok(2, move |comm| {
        if comm.rank() == 0 {
            comm.send(&[42u64; 4], 1, 9)?;
            sent.store(true, SeqCst);
        } else {
            // Post only once the send has returned: a send that waited for the
            // receiver would never set the flag.
            await_flag(&sent);
            let mut buf = [0u64; 4];
            let st = comm.recv(&mut buf, 0, 9)?;
            assert_eq!((buf, st.source, st.tag, st.bytes), ([42; 4], 0, 9, 32));
        }
        Ok(())
    });
}

/// Up to the eager threshold (2 KiB by default) a standard send is copied and
/// returns without the receiver; above it, it is a rendezvous and returns only
/// once the receive is posted. A threshold set on the runtime moves the line
/// both ways, including below the sizes the fastbox (40 B) and the rings
/// (2 KiB) would otherwise carry: a threshold of 0 makes every standard send
/// wait for its receiver, the usual check that a program does not rely on
/// buffering.
#[test]
fn standard_send_is_eager_up_to_the_threshold_and_waits_above_it() {
    let default = courier::DEFAULT_EAGER_THRESHOLD;
    assert_eq!(default, 2048);
    for (threshold, size, eager) in [
        (None, default, true),
        (None, default + 1, false),
        (None, 16 * 1024, false),
        (Some(16 * 1024), 16 * 1024, true),
        (Some(512), 512, true),
        (Some(512), 513, false),
        (Some(0), 8, false),
        (Some(0), 0, true),
    ] {
        let sent = Arc::new(AtomicBool::new(false));
        let posted = Arc::new(AtomicBool::new(false));
        let mut rt = courier::Runtime::new().ranks(2);
        if let Some(bytes) = threshold {
            rt = rt.eager_threshold(bytes);
        }
        common::run_with(rt, move |comm| {
            if comm.rank() == 0 {
                comm.send(&vec![5u8; size], 1, 3)?;
                sent.store(true, SeqCst);
                if !eager {
                    assert!(
                        posted.load(SeqCst),
                        "a standard send of {size} B (threshold {threshold:?}) returned before the receive was posted"
                    );
                }
            } else {
                if eager {
                    // Posted only once the send has returned: a send that
                    // waited for the receiver would never set the flag.
                    await_flag(&sent);
                } else {
                    sleep(Duration::from_millis(100));
                }
                posted.store(true, SeqCst);
                let mut buf = vec![0u8; size];
                let st = comm.recv(&mut buf, 0, 3)?;
                assert_eq!(st.bytes, size);
                assert!(buf.iter().all(|&b| b == 5));
            }
            Ok(())
        })
        .unwrap();
    }
}

#[test]
fn bsend_returns_without_the_receiver_even_for_large_messages() {
    let sent = Arc::new(AtomicBool::new(false));
    run_ok(2, move |comm| {
        let n = 1 << 20;
        if comm.rank() == 0 {
            comm.attach_buffer(n + BSEND_OVERHEAD)?;
            let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
            comm.bsend(&data, 1, 0)?;
            sent.store(true, SeqCst);
            assert_eq!(comm.detach_buffer()?, n + BSEND_OVERHEAD);
        } else {
            await_flag(&sent);
            let mut buf = vec![0u8; n];
            comm.recv(&mut buf, 0, 0)?;
            assert!(buf.iter().enumerate().all(|(i, &b)| b == i as u8));
        }
        Ok(())
    });
}

/// Large stored copies lend their memory to the next ones (see `bsend.rs`): a
/// shorter message in a longer reused allocation must arrive with its own
/// length and contents, none of the earlier message's.
#[test]
fn stored_copies_arrive_intact_when_their_memory_is_reused() {
    let sizes = [300_000usize, 100_000, 300_000, 65_536];
    run_ok(2, move |comm| {
        if comm.rank() == 0 {
            comm.attach_buffer(sizes[0] + BSEND_OVERHEAD)?;
            for (k, &n) in sizes.iter().enumerate() {
                comm.bsend(&vec![k as u8 + 1; n], 1, k as i32)?;
                // Stored, not delivered: rank 1 receives once told to.
                comm.send(&[0u8], 1, 100)?;
                comm.recv(&mut [0u8], 1, 100)?;
            }
            comm.detach_buffer()?;
        } else {
            let mut buf = vec![0u8; sizes[0]];
            for (k, &n) in sizes.iter().enumerate() {
                comm.recv(&mut [0u8], 0, 100)?;
                let st = comm.recv(&mut buf, 0, ANY_TAG)?;
                assert_eq!((st.tag, st.bytes), (k as i32, n));
                assert!(buf[..n].iter().all(|&b| b == k as u8 + 1), "message {k}");
                comm.send(&[0u8], 0, 100)?;
            }
        }
        Ok(())
    });
}

#[test]
fn bsend_space_is_exact_refused_when_full_and_returned_on_delivery() {
    run_ok(2, |comm| {
        if comm.rank() == 0 {
            comm.attach_buffer(1000)?;
            comm.bsend(&[1u8; 800], 1, 0)?;
            assert_eq!(comm.buffer_free(), Some(1000 - 800 - BSEND_OVERHEAD));
            let err = comm.bsend(&[2u8; 100], 1, 0).unwrap_err();
            assert_eq!(
                err,
                Error::BufferExhausted {
                    needed: 100 + BSEND_OVERHEAD,
                    free: 1000 - 800 - BSEND_OVERHEAD
                }
            );
            comm.barrier()?; // only now may rank 1 receive
                             // detach waits until the stored message is delivered.
            assert_eq!(comm.detach_buffer()?, 1000);
            comm.attach_buffer(1000)?;
            assert_eq!(comm.buffer_free(), Some(1000));
            comm.bsend(&[3u8; 100], 1, 1)?;
            comm.detach_buffer()?;
        } else {
            // Posting earlier would let the bsend deliver straight into the receive
            // (and return its space at once): wait until rank 0 has checked.
            comm.barrier()?;
            let mut buf = [0u8; 800];
            comm.recv(&mut buf, 0, 0)?;
            assert!(buf.iter().all(|&b| b == 1));
            let mut small = [0u8; 100];
            let st = comm.recv(&mut small, 0, ANY_TAG)?;
            // The refused message was never sent: the next one is the tag-1 one.
            assert_eq!((st.tag, small[0]), (1, 3));
        }
        Ok(())
    });
}

#[test]
fn bsend_without_buffer_and_double_attach_are_errors() {
    run_ok(1, |comm| {
        assert_eq!(comm.bsend(&[1u8], 0, 0), Err(Error::NoBufferAttached));
        assert_eq!(comm.detach_buffer(), Err(Error::NoBufferAttached));
        comm.attach_buffer(64)?;
        assert_eq!(
            comm.attach_buffer(64),
            Err(Error::BufferAlreadyAttached { size: 64 })
        );
        comm.detach_buffer()?;
        Ok(())
    });
}

#[test]
fn rsend_without_a_posted_receive_is_not_ready_and_delivers_nothing() {
    run_ok(2, |comm| {
        if comm.rank() == 0 {
            assert_eq!(
                comm.rsend(&[5u8; 16], 1, 3),
                Err(Error::NotReady { dest: 1, tag: 3 })
            );
            comm.barrier()?;
            comm.barrier()?; // rank 1 has posted a tag-3 receive
            comm.rsend(&[6u8; 16], 1, 3)?;
            // A posted receive with another tag does not make a ready send legal.
            comm.barrier()?;
            assert_eq!(
                comm.rsend(&[7u8; 16], 1, 4),
                Err(Error::NotReady { dest: 1, tag: 4 })
            );
            comm.barrier()?;
        } else {
            comm.barrier()?;
            assert_eq!(
                comm.iprobe(ANY_SOURCE, ANY_TAG)?,
                None,
                "a refused ready send left a message"
            );
            let mut buf = [0u8; 16];
            comm.scope(|s| {
                let r = s.irecv(&mut buf, 0, 3)?;
                comm.barrier()?;
                r.wait()
            })?;
            assert_eq!(buf, [6; 16]);
            let mut other = [0u8; 16];
            comm.scope(|s| {
                let mut r = s.irecv(&mut other, 0, 5)?;
                comm.barrier()?;
                comm.barrier()?;
                assert!(r.cancel()?);
                r.wait()
            })?;
            assert_eq!(
                other, [0; 16],
                "receiver was touched by a refused ready send"
            );
        }
        Ok(())
    });
}

/// A tiny ready send is decided without the receiver's help: here the
/// receiver is outside the runtime (spinning on a flag) while it is sent, and
/// the send must still return, accepted, with its message in the posted
/// receive. A refused one before it leaves nothing behind: the next message
/// of the pair is the standard send that followed.
#[test]
fn tiny_rsend_is_decided_while_the_receiver_is_away() {
    let sent = Arc::new(AtomicBool::new(false));
    run_ok(2, move |comm| {
        if comm.rank() == 0 {
            comm.recv(&mut [0u8; 1], 1, 0)?; // rank 1's tag-1 receive is posted
            assert_eq!(
                comm.rsend(&[9u8; 8], 1, 2),
                Err(Error::NotReady { dest: 1, tag: 2 })
            );
            comm.rsend(&[1u8; 8], 1, 1)?;
            comm.send(&[3u8; 8], 1, 2)?;
            sent.store(true, SeqCst);
        } else {
            let (mut ready, mut later) = ([0u8; 8], [0u8; 8]);
            comm.scope(|s| {
                let r = s.irecv(&mut ready, 0, 1)?;
                comm.send(&[0u8], 0, 0)?;
                await_flag(&sent); // away from the runtime while rank 0 sends
                r.wait()
            })?;
            assert_eq!(ready, [1; 8]);
            comm.recv(&mut later, 0, ANY_TAG)?;
            assert_eq!(later, [3; 8], "the refused ready send left a message");
            assert_eq!(comm.iprobe(ANY_SOURCE, ANY_TAG)?, None);
        }
        Ok(())
    });
}

/// A ready send takes a receive offered to it only once every earlier message
/// of its sender has been matched. Here a standard send with the same tag goes
/// first while the receiver is away: still in the pair's fastbox (8 B) or ring
/// (1 KiB), or matched under the receiver's lock (4 KiB). The receive belongs
/// to it either way, so the ready send finds nothing posted.
#[test]
fn rsend_does_not_overtake_an_earlier_message_of_its_sender() {
    for len in [8, 1024, 4096] {
        let (posted, sent) = flag_pair();
        run_ok(2, move |comm| {
            if comm.rank() == 0 {
                await_flag(&posted);
                comm.send(&vec![1u8; len], 1, 5)?;
                let ready = comm.rsend(&vec![2u8; len], 1, 5);
                sent.store(true, SeqCst);
                assert_eq!(ready, Err(Error::NotReady { dest: 1, tag: 5 }), "{len} B");
            } else {
                let mut buf = vec![0u8; len];
                comm.scope(|s| {
                    let r = s.irecv(&mut buf, 0, 5)?;
                    posted.store(true, SeqCst);
                    await_flag(&sent);
                    r.wait()
                })?;
                assert!(
                    buf.iter().all(|&b| b == 1),
                    "{len} B: the ready send overtook"
                );
                assert_eq!(comm.iprobe(ANY_SOURCE, ANY_TAG)?, None);
            }
            Ok(())
        });
    }
}

/// A ready send fills the earliest posted receive that accepts it, even when
/// a later one names its sender: the any-source receive here, posted first.
#[test]
fn rsend_fills_the_earliest_accepting_receive_even_an_any_source_one() {
    let (posted, sent) = flag_pair();
    run_ok(2, move |comm| {
        if comm.rank() == 0 {
            await_flag(&posted);
            comm.rsend(&[2u8; 8], 1, 5)?;
            sent.store(true, SeqCst);
        } else {
            let (mut any, mut named) = ([0u8; 8], [0u8; 8]);
            comm.scope(|s| {
                let mut a = s.irecv(&mut any, ANY_SOURCE, 5)?;
                let mut b = s.irecv(&mut named, 0, 5)?;
                posted.store(true, SeqCst);
                await_flag(&sent);
                assert!(
                    a.test()?.is_some(),
                    "the earlier any-source receive was passed over"
                );
                assert!(b.cancel()?, "the later receive was filled");
                Ok(())
            })?;
            assert_eq!((any, named), ([2; 8], [0; 8]));
        }
        Ok(())
    });
}

/// A cancelled receive is withdrawn from ready sends too: one that follows
/// the cancel finds nothing posted and leaves the buffer alone.
#[test]
fn rsend_after_a_cancel_finds_nothing_posted() {
    let (cancelled, sent) = flag_pair();
    run_ok(2, move |comm| {
        if comm.rank() == 0 {
            await_flag(&cancelled);
            let ready = comm.rsend(&[2u8; 8], 1, 5);
            sent.store(true, SeqCst);
            assert_eq!(ready, Err(Error::NotReady { dest: 1, tag: 5 }));
        } else {
            let mut buf = [0u8; 8];
            comm.scope(|s| {
                let mut r = s.irecv(&mut buf, 0, 5)?;
                assert!(r.cancel()?);
                cancelled.store(true, SeqCst);
                await_flag(&sent);
                Ok(())
            })?;
            assert_eq!(buf, [0; 8], "a ready send wrote into a cancelled receive");
        }
        Ok(())
    });
}

/// Many ready-send round trips, each into a freshly posted receive, with
/// standard sends of the same tag in between: every message lands in the
/// receive its order says, with its own contents.
#[test]
fn ready_and_standard_sends_keep_their_order_round_after_round() {
    for ranks in [2, 3] {
        run_ok(ranks, |comm| {
            if comm.rank() > 1 {
                return Ok(());
            }
            let peer = 1 - comm.rank();
            for round in 0..300u32 {
                let mine = [round, comm.rank() as u32];
                let (mut got, mut then) = ([0u32; 2], [0u32; 2]);
                comm.scope(|s| {
                    let r = s.irecv(&mut got, peer, 7)?;
                    let q = s.irecv(&mut then, peer, 7)?;
                    comm.sendrecv(&[0u8], peer, 1, &mut [0u8], peer, 1)?; // both posted
                    comm.rsend(&mine, peer, 7)?;
                    comm.send(&[round + 1000, 9], peer, 7)?;
                    r.wait()?;
                    q.wait()
                })?;
                assert_eq!(got, [round, peer as u32], "round {round}");
                assert_eq!(then, [round + 1000, 9], "round {round}");
            }
            Ok(())
        });
    }
}

#[test]
fn send_owned_moves_the_buffer_without_copying() {
    for n in [1usize, 1 << 20] {
        run_ok(2, move |comm| {
            if comm.rank() == 0 {
                let v: Vec<u32> = (0..n as u32).collect();
                comm.send(&[v.as_ptr() as usize], 1, 0)?;
                comm.send_owned(v, 1, 1)?;
            } else {
                let mut addr = [0usize];
                comm.recv(&mut addr, 0, 0)?;
                let (v, st) = comm.recv_owned::<u32>(0, 1)?;
                assert_eq!(
                    v.as_ptr() as usize,
                    addr[0],
                    "the Vec was copied, not moved"
                );
                assert_eq!((v.len(), st.bytes), (n, 4 * n));
                assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
            }
            Ok(())
        });
    }
}

#[test]
fn owned_and_slice_messages_interoperate() {
    run_ok(2, |comm| {
        if comm.rank() == 0 {
            comm.send_owned(vec![1u16, 2, 3], 1, 0)?; // received into a slice
            comm.send(&[4u16, 5], 1, 1)?; // received as a Vec
            comm.send_owned(vec![0x0102_0304u32], 1, 2)?; // received as other type
        } else {
            let mut a = [0u16; 3];
            comm.recv(&mut a, 0, 0)?;
            assert_eq!(a, [1, 2, 3]);
            assert_eq!(comm.recv_owned::<u16>(0, 1)?.0, vec![4, 5]);
            let (bytes, _) = comm.recv_owned::<u8>(0, 2)?;
            assert_eq!(bytes, 0x0102_0304u32.to_ne_bytes().to_vec());
        }
        Ok(())
    });
}

#[test]
fn every_mode_delivers_every_size_in_a_ring() {
    for ranks in RANK_COUNTS {
        for size in [0usize, 1, 100, 20_000, 300_000] {
            let done = Arc::new(AtomicUsize::new(0));
            let counted = done.clone();
            run_ok(ranks, move |comm| {
                let (me, p) = (comm.rank(), comm.size());
                let (right, left) = ((me + 1) % p, (me + p - 1) % p);
                comm.attach_buffer(4 * (size + BSEND_OVERHEAD))?;
                let data: Vec<u8> = (0..size).map(|i| (i + me) as u8).collect();
                let mut buf = vec![0u8; size];
                let check = |buf: &[u8]| {
                    assert!(buf.iter().enumerate().all(|(i, &b)| b == (i + left) as u8))
                };
                for mode in 0..4 {
                    comm.scope(|s| {
                        let r = s.irecv(&mut buf, left, mode)?;
                        comm.barrier()?; // every receive is posted: rsend is legal
                        match mode {
                            0 => comm.send(&data, right, mode)?,
                            1 => comm.bsend(&data, right, mode)?,
                            2 => comm.ssend(&data, right, mode)?,
                            _ => comm.rsend(&data, right, mode)?,
                        }
                        let st = r.wait()?;
                        assert_eq!((st.source, st.tag, st.bytes), (left, mode, size));
                        Ok::<_, Error>(())
                    })?;
                    check(&buf);
                }
                let st = comm.sendrecv(&data, right, 9, &mut buf, left, 9)?;
                assert_eq!(st.bytes, size);
                check(&buf);
                let mut inplace = data.clone();
                comm.sendrecv_replace(&mut inplace, right, 10, left, 10)?;
                check(&inplace);
                comm.detach_buffer()?;
                counted.fetch_add(1, SeqCst);
                Ok(())
            });
            assert_eq!(done.load(SeqCst), ranks);
        }
    }
}

#[test]
fn rendezvous_sends_to_self_complete_through_a_posted_receive() {
    run_ok(1, |comm| {
        let data = vec![3u8; 100_000];
        let mut buf = vec![0u8; 100_000];
        comm.scope(|s| {
            let r = s.irecv(&mut buf, 0, 0)?;
            comm.ssend(&data, 0, 0)?;
            r.wait()
        })?;
        assert_eq!(buf, data);
        Ok(())
    });
}

#[test]
fn zero_ranks_is_a_configuration_error() {
    let err = run(0, |_| Ok(())).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
}

/// Every length around the fastbox's 40 bytes arrives intact and counted, both
/// taken straight from the fastbox (a blocking receive) and drained from it
/// into the queue first (a probe): the slot carries only the words a message
/// covers, so a stale word from a longer earlier message must never show.
#[test]
fn every_tiny_length_arrives_intact_through_the_fastbox() {
    run_ok(2, |comm| {
        let lengths = (0..=48usize).chain((0..=48).rev());
        if comm.rank() == 0 {
            for (i, len) in lengths.enumerate() {
                let data: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
                comm.send(&data, 1, 3)?;
            }
        } else {
            for (i, len) in lengths.enumerate() {
                if i % 2 == 1 {
                    assert_eq!(comm.probe(0, 3)?.bytes, len);
                }
                let mut buf = [0xAAu8; 64];
                let st = comm.recv(&mut buf, 0, 3)?;
                assert_eq!(st.bytes, len, "message {i}");
                let want: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
                assert_eq!(&buf[..len], &want[..], "message {i}");
                assert!(buf[len..].iter().all(|&b| b == 0xAA), "message {i}");
            }
        }
        Ok(())
    });
}

/// Large rendezvous copies are shared between sender and receiver in chunks
/// (`shm::copy`). Whichever side matches — the sender into a posted receive,
/// or the receiver out of a queued send — and whether or not the other side
/// is spinning to help, every byte must arrive once, in place, with the
/// message's own length; around the sharing threshold, and with a short last
/// chunk.
#[test]
fn large_messages_arrive_intact_whichever_side_copies() {
    let sizes = [
        128 * 1024 - 1,
        128 * 1024,
        5 * 32 * 1024 + 123,
        (3 << 20) + 7,
    ];
    let pattern = |n: usize, k: usize| -> Vec<u8> { (0..n).map(|i| (i * 31 + k) as u8).collect() };
    run_ok(2, move |comm| {
        for (k, &n) in sizes.iter().enumerate() {
            // Round 0: the receive is posted first (the sender copies);
            // round 1: the send is queued first (the receiver copies).
            for round in 0..2 {
                let tag = (2 * k + round) as i32;
                let data = pattern(n, k + round);
                if comm.rank() == 0 {
                    if round == 0 {
                        comm.recv(&mut [0u8], 1, 1000)?; // the receive is posted
                    }
                    match k % 3 {
                        0 => comm.send(&data, 1, tag)?,
                        1 => comm.ssend(&data, 1, tag)?,
                        _ => comm.scope(|s| s.isend(&data, 1, tag)?.wait().map(drop))?,
                    }
                } else {
                    let mut buf = vec![0u8; n + 64];
                    let st = if round == 0 {
                        comm.scope(|s| {
                            let r = s.irecv(&mut buf, 0, tag)?;
                            comm.send(&[0u8], 0, 1000)?;
                            r.wait()
                        })?
                    } else {
                        sleep(Duration::from_millis(20)); // the send queues
                        comm.recv(&mut buf, 0, tag)?
                    };
                    assert_eq!(st.bytes, n, "size {n} round {round}");
                    assert!(buf[..n] == data[..], "size {n} round {round}: bytes differ");
                    assert!(
                        buf[n..].iter().all(|&b| b == 0),
                        "size {n}: wrote past the message"
                    );
                }
            }
        }
        // A run of large ping-pongs, each side spinning (and helping) in turn.
        let data = pattern(1 << 20, 9);
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..20 {
            if comm.rank() == 0 {
                comm.send(&data, 1, 77)?;
                comm.recv(&mut buf, 1, 77)?;
            } else {
                comm.recv(&mut buf, 0, 77)?;
                comm.send(&buf, 0, 77)?;
            }
        }
        if comm.rank() == 0 {
            assert!(buf == data, "a ping-ponged megabyte came back changed");
        }
        Ok(())
    });
}
