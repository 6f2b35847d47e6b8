//! Requests: completion functions, cancel, and what happens to leaked requests.

mod common;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::sleep;
use std::time::Duration;

use common::run_ok;
use courier::{test_all, test_any, wait_all, wait_any, Error, ANY_SOURCE, ANY_TAG};

#[test]
fn isend_irecv_and_wait_all_exchange_among_all_ranks() {
    for ranks in [2, 3, 8] {
        run_ok(ranks, |comm| {
            let (me, p) = (comm.rank(), comm.size());
            let out: Vec<[u64; 64]> = (0..p).map(|d| [(me * 100 + d) as u64; 64]).collect();
            let mut inc = vec![[0u64; 64]; p];
            let statuses = comm.scope(|s| {
                let mut reqs = Vec::new();
                for (src, slot) in inc.iter_mut().enumerate() {
                    reqs.push(s.irecv(slot, src, 7)?);
                }
                for (dest, msg) in out.iter().enumerate() {
                    reqs.push(s.isend(msg, dest, 7)?);
                }
                wait_all(&mut reqs)
            })?;
            for (src, slot) in inc.iter().enumerate() {
                assert_eq!(slot, &[(src * 100 + me) as u64; 64]);
                assert_eq!(statuses[src].source, src);
            }
            Ok(())
        });
    }
}

#[test]
fn wait_any_reports_each_completion_once_then_none() {
    run_ok(3, |comm| {
        if comm.rank() == 0 {
            let (mut a, mut b) = ([0u8; 4], [0u8; 4]);
            comm.scope(|s| {
                let mut reqs = vec![s.irecv(&mut a, 1, 0)?, s.irecv(&mut b, 2, 0)?];
                comm.send(&[1u8], 2, 99)?; // let rank 2 go first
                let (first, st) = wait_any(&mut reqs)?.expect("active requests");
                assert_eq!((first, st?.source), (1, 2));
                comm.send(&[1u8], 1, 99)?;
                let (second, st) = wait_any(&mut reqs)?.expect("one request left");
                assert_eq!((second, st?.source), (0, 1));
                assert!(wait_any(&mut reqs)?.is_none());
                assert_eq!(reqs[0].test(), Err(Error::InactiveRequest));
                Ok::<_, Error>(())
            })?;
            assert_eq!((a, b), ([1; 4], [2; 4]));
        } else {
            comm.recv::<u8>(&mut [0], 0, 99)?;
            comm.send(&[comm.rank() as u8; 4], 0, 0)?;
        }
        Ok(())
    });
}

#[test]
fn test_any_and_test_all_do_not_block_and_complete_all_or_nothing() {
    let go = Arc::new(AtomicBool::new(false));
    run_ok(2, move |comm| {
        if comm.rank() == 0 {
            let (mut a, mut b) = ([0u32; 2], [0u32; 2]);
            comm.scope(|s| {
                let mut reqs = vec![s.irecv(&mut a, 1, 1)?, s.irecv(&mut b, 1, 2)?];
                assert!(test_any(&mut reqs)?.is_none());
                assert!(test_all(&mut reqs)?.is_none());
                go.store(true, SeqCst);
                // Both arrive eventually; test_all then completes both at once.
                let statuses = loop {
                    if let Some(st) = test_all(&mut reqs)? {
                        break st;
                    }
                    std::thread::yield_now();
                };
                assert_eq!((statuses[0].tag, statuses[1].tag), (1, 2));
                assert!(!reqs[0].is_active() && !reqs[1].is_active());
                Ok::<_, Error>(())
            })?;
            assert_eq!((a, b), ([1, 1], [2, 2]));
        } else {
            while !go.load(SeqCst) {
                sleep(Duration::from_millis(1));
            }
            comm.send(&[1u32; 2], 0, 1)?;
            comm.send(&[2u32; 2], 0, 2)?;
        }
        Ok(())
    });
}

#[test]
fn cancel_withdraws_an_unmatched_receive_without_losing_the_next_message() {
    run_ok(2, |comm| {
        if comm.rank() == 0 {
            let mut buf = [9u8; 8];
            comm.scope(|s| {
                let mut r = s.irecv(&mut buf, 1, ANY_TAG)?;
                assert!(r.cancel()?);
                let st = r.wait()?;
                assert!(st.cancelled);
                Ok::<_, Error>(())
            })?;
            assert_eq!(buf, [9; 8], "a cancelled receive wrote its buffer");
            comm.barrier()?; // now rank 1 sends
            let mut got = [0u8; 8];
            comm.recv(&mut got, 1, ANY_TAG)?;
            assert_eq!(got, [5; 8], "the message went to the cancelled receive");
            // A matched receive cannot be cancelled.
            let mut again = [0u8; 8];
            comm.scope(|s| {
                let mut r = s.irecv(&mut again, 1, 1)?;
                comm.barrier()?;
                while !r.test().map(|st| st.is_some())? {
                    std::thread::yield_now();
                }
                assert!(!r.cancel()?);
                Ok::<_, Error>(())
            })?;
            assert_eq!(again, [6; 8]);
        } else {
            comm.barrier()?;
            comm.send(&[5u8; 8], 0, 0)?;
            comm.barrier()?;
            comm.send(&[6u8; 8], 0, 1)?;
        }
        Ok(())
    });
}

#[test]
fn a_leaked_receive_is_cancelled_at_scope_end_and_its_message_kept() {
    run_ok(2, |comm| {
        if comm.rank() == 0 {
            let mut buf = [0u32; 4];
            comm.scope(|s| {
                let r = s.irecv(&mut buf, 1, 0)?;
                std::mem::forget(r); // the scope still settles it
                Ok::<_, Error>(())
            })?;
            assert_eq!(buf, [0; 4], "written after the scope ended");
            comm.barrier()?;
            let mut later = [0u32; 4];
            comm.recv(&mut later, 1, 0)?;
            assert_eq!(later, [8; 4]);
        } else {
            comm.barrier()?;
            comm.send(&[8u32; 4], 0, 0)?;
        }
        Ok(())
    });
}

#[test]
fn a_dropped_send_request_still_completes_at_scope_end() {
    run_ok(2, |comm| {
        let data = vec![3u8; 200_000]; // rendezvous: pending until received
        if comm.rank() == 0 {
            comm.scope(|s| {
                drop(s.isend(&data, 1, 0)?);
                Ok::<_, Error>(())
            })?; // returns only after rank 1 has copied the data
        } else {
            sleep(Duration::from_millis(20));
            let mut buf = vec![0u8; 200_000];
            comm.recv(&mut buf, 0, 0)?;
            assert_eq!(buf, data);
        }
        Ok(())
    });
}

#[test]
fn irsend_needs_a_posted_receive_and_ibsend_needs_space() {
    run_ok(2, |comm| {
        if comm.rank() == 0 {
            let data = [1u16; 10];
            comm.scope(|s| {
                // Rank 1 never posts a tag-7 receive (it may already wait on tag 0).
                assert_eq!(
                    s.irsend(&data, 1, 7).unwrap_err(),
                    Error::NotReady { dest: 1, tag: 7 }
                );
                assert_eq!(s.ibsend(&data, 1, 0).unwrap_err(), Error::NoBufferAttached);
                Ok::<_, Error>(())
            })?;
            comm.attach_buffer(1024)?;
            comm.scope(|s| s.ibsend(&data, 1, 0)?.wait())?;
            comm.detach_buffer()?;
            comm.barrier()?;
            comm.scope(|s| s.irsend(&data, 1, 1)?.wait())?;
        } else {
            let mut a = [0u16; 10];
            comm.recv(&mut a, 0, 0)?;
            let mut b = [0u16; 10];
            comm.scope(|s| {
                let r = s.irecv(&mut b, ANY_SOURCE, 1)?;
                comm.barrier()?;
                r.wait()
            })?;
            assert_eq!((a, b), ([1; 10], [1; 10]));
        }
        Ok(())
    });
}
