//! Non-overtaking (FIFO per pair and communicator) and any-source fairness.

mod common;

use common::run_ok;
use courier::{Runtime, ANY_SOURCE, ANY_TAG};

#[test]
fn messages_between_a_pair_are_not_overtaken_across_tags_and_sizes() {
    // Mixed sizes, so eager and rendezvous messages interleave. The receiver
    // posts every receive up front, grouped by tag, so the (blocking) rendezvous
    // sends always find a receive and the program cannot deadlock.
    let sizes = |i: u32| [4usize, 40_000, 16, 70_000][(i % 4) as usize];
    run_ok(2, move |comm| {
        let n = 100u32;
        if comm.rank() == 0 {
            for i in 0..n {
                let mut msg = vec![0u32; sizes(i) / 4];
                msg[0] = i;
                comm.send(&msg, 1, (i % 5) as i32)?;
            }
        } else {
            let mut bufs = vec![vec![0u32; 70_000 / 4]; n as usize];
            let order: Vec<(i32, usize)> = comm.scope(|s| {
                let mut reqs = Vec::new();
                let mut tags = Vec::new();
                let mut slots = bufs.iter_mut();
                for tag in 0..5 {
                    for _ in (0..n).filter(|i| i % 5 == tag) {
                        reqs.push(s.irecv(slots.next().expect("buffer"), 0, tag as i32)?);
                        tags.push(tag as i32);
                    }
                }
                let st = courier::wait_all(&mut reqs)?;
                Ok::<_, courier::Error>(tags.into_iter().zip(st.iter().map(|s| s.bytes)).collect())
            })?;
            // Receive k of a tag got the k-th message sent with that tag.
            let mut expected = (0..5).flat_map(|tag| (0..n).filter(move |i| i % 5 == tag));
            for (buf, (tag, bytes)) in bufs.iter().zip(order) {
                let i = expected.next().expect("one message per receive");
                assert_eq!(
                    (buf[0], tag, bytes),
                    (i, (i % 5) as i32, sizes(i)),
                    "overtaken"
                );
            }
        }
        Ok(())
    });
}

#[test]
fn any_tag_receives_see_send_order() {
    run_ok(2, |comm| {
        let n = 500u32;
        if comm.rank() == 0 {
            for i in 0..n {
                match i % 3 {
                    0 => comm.send(&[i], 1, (i % 7) as i32)?,
                    1 => comm.ssend(&[i], 1, (i % 7) as i32)?,
                    _ => comm.send_owned(vec![i], 1, (i % 7) as i32)?,
                }
            }
        } else {
            for i in 0..n {
                let mut v = [0u32];
                let st = comm.recv(&mut v, 0, ANY_TAG)?;
                assert_eq!((v[0], st.tag), (i, (i % 7) as i32));
            }
        }
        Ok(())
    });
}

#[test]
fn fifo_holds_per_sender_under_any_source_with_many_senders() {
    run_ok(8, |comm| {
        let n = 300u32;
        if comm.rank() != 0 {
            for i in 0..n {
                comm.send(&[comm.rank() as u32, i], 0, 0)?;
            }
        } else {
            let mut next = vec![0u32; comm.size()];
            for _ in 0..n * 7 {
                let mut m = [0u32; 2];
                let st = comm.recv(&mut m, ANY_SOURCE, 0)?;
                assert_eq!(st.source as u32, m[0]);
                assert_eq!(m[1], next[st.source], "rank {} overtaken", st.source);
                next[st.source] += 1;
            }
            assert!(next[1..].iter().all(|&c| c == n));
        }
        Ok(())
    });
}

#[test]
fn any_source_does_not_starve_a_sender() {
    // Rank 1 floods, rank 2 sends a trickle. With a small credit the flood is held
    // back, and the trickle must be received while the flood is still going on
    // (not only after it).
    let rt = Runtime::new().ranks(3).credit(256);
    let results = common::run_with(rt, |comm| {
        let flood = 20_000u32;
        match comm.rank() {
            1 => {
                for i in 0..flood {
                    comm.send(&[1u32, i], 0, 0)?;
                }
                comm.send(&[1u32, u32::MAX], 0, 0)?;
                Ok(None)
            }
            2 => {
                for i in 0..10u32 {
                    comm.send(&[2u32, i], 0, 0)?;
                }
                Ok(None)
            }
            _ => {
                let (mut flood_seen, mut trickle_done_at) = (0u32, None);
                let mut trickle = 0;
                while flood_seen <= flood {
                    let mut m = [0u32; 2];
                    comm.recv(&mut m, ANY_SOURCE, 0)?;
                    if m[0] == 1 {
                        flood_seen += 1;
                    } else {
                        trickle += 1;
                        if trickle == 10 {
                            trickle_done_at = Some(flood_seen);
                        }
                    }
                    if m[0] == 1 && m[1] == u32::MAX {
                        break;
                    }
                }
                Ok(Some(trickle_done_at))
            }
        }
    })
    .unwrap();
    let at = results[0]
        .expect("rank 0 reports")
        .expect("all 10 trickle messages arrived");
    assert!(
        at < 20_000,
        "the trickle was only served after the whole flood ({at})"
    );
}

/// Blocking receives from one rank take tiny messages straight from the pair's
/// fastbox when nothing else is pending; mixed with messages that go through
/// the mailbox (larger ones, or tiny ones whose fastbox was still full) and a
/// receiver that sometimes lags (so later sends drain the fastbox into the
/// queue), the order must still be the send order. 4 pairs at once: 8 ranks
/// on however few cores.
#[test]
fn blocking_receives_taking_fastbox_messages_keep_send_order() {
    let sizes = [4usize, 4, 200, 8, 4, 1000, 4, 40_000, 36];
    run_ok(8, move |comm| {
        let (me, n) = (comm.rank(), 3000u32);
        let peer = me ^ 1;
        let mut buf = vec![0u32; 40_000 / 4];
        if me % 2 == 0 {
            for i in 0..n {
                let len = sizes[i as usize % sizes.len()] / 4;
                let mut msg = vec![0u32; len.max(1)];
                msg[0] = i;
                comm.send(&msg, peer, (i % 3) as i32)?;
            }
        } else {
            for i in 0..n {
                if i % 97 == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                // Alternate wildcard and exact-tag receives (both in send order).
                let st = if i % 2 == 0 {
                    comm.recv(&mut buf, peer, ANY_TAG)?
                } else {
                    comm.recv(&mut buf, peer, (i % 3) as i32)?
                };
                let len = sizes[i as usize % sizes.len()].max(4);
                assert_eq!(
                    (buf[0], st.tag, st.bytes),
                    (i, (i % 3) as i32, len),
                    "overtaken"
                );
            }
        }
        Ok(())
    });
}

/// Several threads sending as one rank share that pair's fastbox and ring:
/// each thread's messages must still arrive in its own send order, including
/// when one thread's message takes the ring or the mailbox (too large, or the
/// fastbox or ring full) while another thread is still writing an older one.
#[test]
fn threads_sending_as_one_rank_keep_their_own_send_order() {
    const THREADS: u32 = 2;
    let n = 500_000u32;
    run_ok(2, move |comm| {
        if comm.rank() == 0 {
            std::thread::scope(|t| {
                let senders: Vec<_> = (0..THREADS)
                    .map(|tag| {
                        t.spawn(move || {
                            for i in 0..n {
                                // Mostly tiny (the fastbox), every 7th small
                                // (the ring), every 13th too large for both.
                                let len = match (i % 7, i % 13) {
                                    (_, 12) => 1024,
                                    (6, _) => 50,
                                    _ => 1,
                                };
                                let mut msg = vec![0u32; len];
                                msg[0] = i;
                                comm.send(&msg, 1, tag as i32)?;
                            }
                            Ok::<_, courier::Error>(())
                        })
                    })
                    .collect();
                senders
                    .into_iter()
                    .try_for_each(|h| h.join().expect("sender thread panicked"))
            })?;
        } else {
            let mut next = [0u32; THREADS as usize];
            let mut buf = [0u32; 1024];
            for k in 0..THREADS * n {
                if k % 4096 == 0 {
                    // Lag, so the fastbox and ring fill and later sends take the mailbox.
                    std::thread::sleep(std::time::Duration::from_micros(300));
                }
                let st = comm.recv(&mut buf, 0, ANY_TAG)?;
                let t = st.tag as usize;
                assert_eq!(buf[0], next[t], "thread {t}'s messages overtaken");
                next[t] += 1;
            }
        }
        Ok(())
    });
}
