//! The MPI matching engine: posted receives against arrived ("unexpected") messages.
//!
//! Pure data structure, no synchronization: the shared-memory transport keeps one
//! per receiving rank behind that rank's mailbox lock. The rules (MPI 4.0 §3.5):
//!
//! * a message matches a receive when the contexts are equal and the receive's source
//!   and tag are equal to the message's or wildcards;
//! * an arriving message goes to the *earliest posted* receive it matches;
//! * a newly posted receive takes the *earliest arrived* message it matches;
//!
//! together these give non-overtaking: two messages from one sender on one context
//! that both match a receive are received in the order they were sent.

use std::collections::VecDeque;

/// Who sent a message, on which communicator, with which tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Envelope {
    /// Communicator context id.
    pub ctx: u32,
    /// Sender's rank in the communicator.
    pub source: usize,
    /// Message tag.
    pub tag: i32,
}

/// What a receive (or probe) accepts: a context, a source or any, a tag or any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pattern {
    /// Communicator context id.
    pub ctx: u32,
    /// `None` = any source.
    pub source: Option<usize>,
    /// `None` = any tag.
    pub tag: Option<i32>,
}

impl Pattern {
    /// Whether a message with this envelope satisfies the pattern.
    #[inline]
    pub fn matches(&self, env: &Envelope) -> bool {
        self.ctx == env.ctx
            && self.source.is_none_or(|s| s == env.source)
            && self.tag.is_none_or(|t| t == env.tag)
    }

    /// Whether every message `other` accepts, this pattern accepts too.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub fn covers(&self, other: &Pattern) -> bool {
        fn within<T: PartialEq>(a: Option<T>, b: Option<T>) -> bool {
            a.is_none() || a == b
        }
        self.ctx == other.ctx && within(self.source, other.source) && within(self.tag, other.tag)
    }

    /// Whether some message could satisfy both patterns.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub fn overlaps(&self, other: &Pattern) -> bool {
        fn meet<T: PartialEq>(a: Option<T>, b: Option<T>) -> bool {
            a.is_none() || b.is_none() || a == b
        }
        self.ctx == other.ctx && meet(self.source, other.source) && meet(self.tag, other.tag)
    }
}

/// Posted receives of type `R` and unexpected messages of type `M`, each in order.
#[derive(Debug)]
pub(crate) struct Matcher<R, M> {
    posted: VecDeque<(Pattern, R)>,
    unexpected: VecDeque<(Envelope, M)>,
}

impl<R, M> Default for Matcher<R, M> {
    fn default() -> Self {
        Matcher {
            posted: VecDeque::new(),
            unexpected: VecDeque::new(),
        }
    }
}

impl<R, M> Matcher<R, M> {
    /// Removes and returns the earliest posted receive that accepts `env`.
    /// Posted receives plus unexpected messages.
    pub fn len(&self) -> usize {
        self.posted.len() + self.unexpected.len()
    }

    pub fn take_posted(&mut self, env: &Envelope) -> Option<R> {
        let i = self.posted.iter().position(|(p, _)| p.matches(env))?;
        self.posted.remove(i).map(|(_, r)| r)
    }

    /// Queues a message no posted receive accepted (call `take_posted` first).
    pub fn push_unexpected(&mut self, env: Envelope, msg: M) {
        self.unexpected.push_back((env, msg));
    }

    /// Removes and returns the earliest arrived message that `pat` accepts.
    pub fn take_unexpected(&mut self, pat: &Pattern) -> Option<(Envelope, M)> {
        let i = self.unexpected.iter().position(|(e, _)| pat.matches(e))?;
        self.unexpected.remove(i)
    }

    /// The earliest arrived message that `pat` accepts, left in place (probe).
    pub fn peek_unexpected(&self, pat: &Pattern) -> Option<&(Envelope, M)> {
        self.unexpected.iter().find(|(e, _)| pat.matches(e))
    }

    /// Queues a receive no arrived message satisfied (call `take_unexpected` first).
    pub fn push_posted(&mut self, pat: Pattern, recv: R) {
        self.posted.push_back((pat, recv));
    }

    /// Removes the first posted receive for which `pred` holds (cancel).
    pub fn remove_posted(&mut self, mut pred: impl FnMut(&R) -> bool) -> Option<R> {
        let i = self.posted.iter().position(|(_, r)| pred(r))?;
        self.posted.remove(i).map(|(_, r)| r)
    }

    /// Removes the first arrived message for which `pred` holds (abandoned send).
    pub fn remove_unexpected(&mut self, mut pred: impl FnMut(&M) -> bool) -> Option<(Envelope, M)> {
        let i = self.unexpected.iter().position(|(_, m)| pred(m))?;
        self.unexpected.remove(i)
    }
}

#[cfg(test)]
mod tests {
    //! Properties from MPI 4.0 §3.5 ("Semantics of point-to-point communication"),
    //! checked on random interleavings of posted receives and arriving messages.
    use super::*;
    use proptest::prelude::*;

    /// Every envelope the patterns below can tell apart.
    fn envelopes() -> impl Iterator<Item = Envelope> {
        (0..2).flat_map(|ctx| {
            (0..3).flat_map(move |source| (0..3).map(move |tag| Envelope { ctx, source, tag }))
        })
    }

    fn pattern() -> impl Strategy<Value = Pattern> {
        (
            0u32..2,
            proptest::option::of(0usize..3),
            proptest::option::of(0i32..3),
        )
            .prop_map(|(ctx, source, tag)| Pattern { ctx, source, tag })
    }

    proptest! {
        /// Two patterns overlap exactly when some envelope satisfies both.
        #[test]
        fn patterns_overlap_iff_an_envelope_matches_both(pa in pattern(), pb in pattern()) {
            let both = envelopes().any(|env| pa.matches(&env) && pb.matches(&env));
            prop_assert_eq!(pa.overlaps(&pb), both);
        }

        /// A pattern covers another exactly when it accepts every envelope the
        /// other accepts.
        #[test]
        fn a_pattern_covers_another_iff_it_accepts_all_it_accepts(pa in pattern(), pb in pattern()) {
            let all = envelopes().all(|env| !pb.matches(&env) || pa.matches(&env));
            prop_assert_eq!(pa.covers(&pb), all);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Post(Pattern),
        Arrive(Envelope),
    }

    fn op() -> impl Strategy<Value = Op> {
        let env = (0u32..2, 0usize..3, 0i32..3).prop_map(|(ctx, source, tag)| Envelope {
            ctx,
            source,
            tag,
        });
        prop_oneof![pattern().prop_map(Op::Post), env.prop_map(Op::Arrive)]
    }

    /// Runs the ops; returns posted patterns, arrived envelopes, and the matches
    /// as (receive index, message index, pending receives, pending messages) at
    /// the moment of each match.
    #[allow(clippy::type_complexity)]
    fn simulate(
        ops: &[Op],
    ) -> (
        Vec<Pattern>,
        Vec<Envelope>,
        Vec<(usize, usize, Vec<usize>, Vec<usize>)>,
        Matcher<usize, usize>,
    ) {
        let mut m: Matcher<usize, usize> = Matcher::default();
        let (mut recvs, mut msgs, mut matches) = (vec![], vec![], vec![]);
        let (mut pend_r, mut pend_m): (Vec<usize>, Vec<usize>) = (vec![], vec![]);
        for op in ops {
            match op {
                Op::Post(p) => {
                    let r = recvs.len();
                    recvs.push(*p);
                    match m.take_unexpected(p) {
                        Some((_, msg)) => {
                            matches.push((r, msg, pend_r.clone(), pend_m.clone()));
                            pend_m.retain(|&x| x != msg);
                        }
                        None => {
                            m.push_posted(*p, r);
                            pend_r.push(r);
                        }
                    }
                }
                Op::Arrive(e) => {
                    let i = msgs.len();
                    msgs.push(*e);
                    match m.take_posted(e) {
                        Some(r) => {
                            matches.push((r, i, pend_r.clone(), pend_m.clone()));
                            pend_r.retain(|&x| x != r);
                        }
                        None => {
                            m.push_unexpected(*e, i);
                            pend_m.push(i);
                        }
                    }
                }
            }
        }
        (recvs, msgs, matches, m)
    }

    proptest! {
        #[test]
        fn matches_are_correct_ordered_and_complete(ops in proptest::collection::vec(op(), 0..80)) {
            let (recvs, msgs, matches, mut m) = simulate(&ops);
            let mut used_r = vec![false; recvs.len()];
            let mut used_m = vec![false; msgs.len()];
            for (r, i, pend_r, pend_m) in &matches {
                prop_assert!(recvs[*r].matches(&msgs[*i]), "matched a message the receive does not accept");
                prop_assert!(!used_r[*r] && !used_m[*i], "matched twice");
                used_r[*r] = true;
                used_m[*i] = true;
                // Non-overtaking: no earlier message from the same sender on the same
                // context that this receive accepts was still waiting.
                for &j in pend_m {
                    let same_sender = msgs[j].ctx == msgs[*i].ctx && msgs[j].source == msgs[*i].source;
                    prop_assert!(!(j < *i && same_sender && recvs[*r].matches(&msgs[j])), "message {i} overtook {j}");
                }
                // Receives in posting order: no earlier pending receive accepted it.
                for &q in pend_r {
                    prop_assert!(!(q < *r && recvs[q].matches(&msgs[*i])), "receive {r} overtook {q}");
                }
            }
            // Nothing missed: no waiting receive accepts a waiting message.
            for (r, p) in recvs.iter().enumerate().filter(|(r, _)| !used_r[*r]) {
                prop_assert!(m.take_unexpected(p).is_none(), "receive {r} left a matching message waiting");
            }
        }
    }

    #[test]
    fn wildcards_match_any_source_and_tag_but_not_another_context() {
        let e = Envelope {
            ctx: 3,
            source: 2,
            tag: 9,
        };
        assert!(Pattern {
            ctx: 3,
            source: None,
            tag: None
        }
        .matches(&e));
        assert!(Pattern {
            ctx: 3,
            source: Some(2),
            tag: None
        }
        .matches(&e));
        assert!(!Pattern {
            ctx: 3,
            source: Some(1),
            tag: None
        }
        .matches(&e));
        assert!(!Pattern {
            ctx: 3,
            source: None,
            tag: Some(8)
        }
        .matches(&e));
        assert!(!Pattern {
            ctx: 4,
            source: None,
            tag: None
        }
        .matches(&e));
    }
}
