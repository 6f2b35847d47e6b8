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
