//! Property tests of matching through the public API: random traffic from
//! several senders, received with random wildcard patterns, keeps per-sender
//! order for every receive pattern.

mod common;

use courier::{Source, TagMatch, ANY_SOURCE, ANY_TAG};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Plan {
    /// (sender 1 or 2, tag) of each message, in global send order per sender.
    sends: Vec<(usize, i32)>,
    /// Receive patterns rank 0 uses, as (source or any, tag or any).
    recvs: Vec<(Option<usize>, Option<i32>)>,
}

fn plan() -> impl Strategy<Value = Plan> {
    proptest::collection::vec((1usize..3, 0i32..3), 1..60).prop_flat_map(|sends| {
        let n = sends.len();
        // Choose receive patterns that will all be satisfied: derive each from a
        // distinct message, then maybe widen it to a wildcard.
        let picks = Just(sends.clone()).prop_shuffle();
        (
            Just(sends),
            picks,
            proptest::collection::vec((any::<bool>(), any::<bool>()), n),
        )
            .prop_map(|(sends, order, widen)| Plan {
                recvs: order
                    .iter()
                    .zip(widen)
                    .map(|(&(s, t), (ws, wt))| ((!ws).then_some(s), (!wt).then_some(t)))
                    .collect(),
                sends,
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn per_sender_order_holds_for_every_pattern(plan in plan()) {
        let p = plan.clone();
        let got = common::run_ok(3, move |comm| {
            let me = comm.rank();
            if me != 0 {
                for (seq, &(_, tag)) in p.sends.iter().enumerate().filter(|(_, (f, _))| *f == me) {
                    comm.send(&[seq as u32], 0, tag)?;
                }
                return Ok(vec![]);
            }
            // Receive in an order that can always be satisfied: all messages are
            // eager, so wait until everything has arrived first.
            let total = p.sends.len();
            while comm.queued_bytes() < 4 * total {
                std::thread::yield_now();
            }
            let mut out = vec![];
            for &(s, t) in &p.recvs {
                let src = s.map_or(ANY_SOURCE, Source::Rank);
                let tag = t.map_or(ANY_TAG, TagMatch::Tag);
                // None: an earlier wildcard took the message this pattern was made from.
                if comm.iprobe(src, tag)?.is_some() {
                    let mut v = [0u32];
                    let st = comm.recv(&mut v, src, tag)?;
                    out.push((s, t, st.source, st.tag, v[0] as usize));
                }
            }
            Ok(out)
        }).remove(0);
        // Each receive got the earliest message it accepts among those left, and
        // per sender, messages accepted by one pattern arrive in send order.
        let mut left: Vec<usize> = (0..plan.sends.len()).collect();
        for (s, t, src, tag, seq) in got {
            let first = left.iter().copied().find(|&i| {
                let (f, g) = plan.sends[i];
                s.is_none_or(|s| s == f) && t.is_none_or(|t| t == g) && f == src
            });
            prop_assert_eq!(first, Some(seq), "pattern ({:?},{:?}) from {} got {} not the earliest", s, t, src, seq);
            prop_assert_eq!(plan.sends[seq], (src, tag));
            left.retain(|&i| i != seq);
        }
    }
}
