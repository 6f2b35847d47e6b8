//! A fast sender cannot make a slow receiver hold more than the credit.

mod common;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use common::run_with;
use courier::Runtime;

#[test]
fn a_streaming_sender_is_held_to_the_credit_of_its_pair() {
    let credit = 64 * 1024;
    let sent = Arc::new(AtomicU32::new(0));
    let rt = Runtime::new().ranks(2).credit(credit).eager_threshold(4096);
    run_with(rt, move |comm| {
        let n = 10_000u32;
        let msg = [7u8; 1024];
        if comm.rank() == 0 {
            for i in 0..n {
                comm.send(&msg, 1, 0)?;
                sent.store(i + 1, SeqCst);
            }
        } else {
            std::thread::sleep(Duration::from_millis(200)); // slow receiver
            let queued = comm.queued_bytes();
            assert!(
                queued <= credit,
                "receiver holds {queued} B > credit {credit} B"
            );
            let before = sent.load(SeqCst);
            assert!(
                before < n,
                "the sender streamed all {n} KiB without waiting"
            );
            let mut buf = [0u8; 1024];
            for _ in 0..n {
                comm.recv(&mut buf, 0, 0)?;
                assert!(comm.queued_bytes() <= credit);
            }
            assert_eq!(buf, msg);
        }
        Ok(())
    })
    .unwrap();
}
