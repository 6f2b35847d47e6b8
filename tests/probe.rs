//! probe / iprobe, matched probes.

mod common;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Mutex;

use common::run_ok;
use courier::{Error, ANY_SOURCE, ANY_TAG};

#[test]
fn probe_reports_the_status_and_leaves_the_message() {
    run_ok(2, |comm| {
        if comm.rank() == 0 {
            comm.send(&[1.0f32; 6], 1, 12)?;
        } else {
            let st = comm.probe(ANY_SOURCE, ANY_TAG)?;
            assert_eq!(
                (st.source, st.tag, st.bytes, st.count::<f32>()),
                (0, 12, 24, 6)
            );
            assert_eq!(comm.iprobe(0, 12)?, Some(st));
            assert_eq!(comm.iprobe(0, 13)?, None);
            let mut buf = vec![0f32; st.count::<f32>()];
            comm.recv(&mut buf, st.source, st.tag)?;
            assert_eq!(buf, vec![1.0; 6]);
            assert_eq!(comm.iprobe(ANY_SOURCE, ANY_TAG)?, None);
        }
        Ok(())
    });
}

#[test]
fn matched_probes_from_two_threads_receive_each_message_exactly_once() {
    let n = 2000u32;
    run_ok(2, move |comm| {
        if comm.rank() == 0 {
            for i in 0..n {
                comm.send(&[i], 1, 0)?;
            }
            comm.send(&[u32::MAX], 1, 0)?;
            comm.send(&[u32::MAX], 1, 0)?; // one stop per thread
        } else {
            let seen = Mutex::new(Vec::new());
            let count = AtomicU32::new(0);
            std::thread::scope(|t| {
                for _ in 0..2 {
                    t.spawn(|| -> Result<(), Error> {
                        loop {
                            let msg = comm.mprobe(0, ANY_TAG)?;
                            assert_eq!(msg.status().bytes, 4);
                            let mut v = [0u32];
                            msg.mrecv(&mut v)?;
                            if v[0] == u32::MAX {
                                return Ok(());
                            }
                            count.fetch_add(1, SeqCst);
                            seen.lock().unwrap().push(v[0]);
                        }
                    });
                }
            });
            let mut seen = seen.into_inner().unwrap();
            seen.sort_unstable();
            assert_eq!(
                seen,
                (0..n).collect::<Vec<_>>(),
                "lost or duplicated messages"
            );
        }
        Ok(())
    });
}

#[test]
fn improbe_claims_and_mrecv_checks_size() {
    run_ok(2, |comm| {
        if comm.rank() == 0 {
            comm.send(&[7u8; 10], 1, 0)?;
            comm.send(&[8u8; 10], 1, 0)?;
            comm.send(&[9u8; 10], 1, 0)?;
        } else {
            let first = comm.mprobe(0, 0)?;
            // Claimed: neither probes nor receives see it any more.
            let next = comm.probe(0, 0)?;
            assert_eq!(next.bytes, 10);
            let mut small = [0u8; 4];
            assert_eq!(
                first.mrecv(&mut small),
                Err(Error::Truncated {
                    message: 10,
                    buffer: 4
                })
            );
            let mut buf = [0u8; 10];
            comm.recv(&mut buf, 0, 0)?;
            assert_eq!(buf, [8; 10], "the claimed message was received twice");
            comm.probe(0, 0)?; // the third message has arrived
            let m = comm.improbe(0, 0)?.expect("third message");
            let (v, st) = m.mrecv_owned::<u8>()?;
            assert_eq!((v, st.bytes), (vec![9; 10], 10));
            assert!(comm.improbe(0, 0)?.is_none());
        }
        Ok(())
    });
}

#[test]
fn a_dropped_matched_message_releases_a_rendezvous_sender() {
    run_ok(2, |comm| {
        if comm.rank() == 0 {
            comm.ssend(&vec![1u8; 100_000], 1, 0)?; // returns once rank 1 discards it
            comm.send(&[2u8], 1, 1)?;
        } else {
            drop(comm.mprobe(0, 0)?);
            let mut b = [0u8];
            comm.recv(&mut b, 0, 1)?;
            assert_eq!(b, [2]);
        }
        Ok(())
    });
}
