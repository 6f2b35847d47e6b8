//! What a completed receive (or probe) reports, and how receives select messages.

/// Source, tag and length of a received or probed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// Rank of the sender in the communicator.
    pub source: usize,
    /// Tag the message was sent with.
    pub tag: i32,
    /// Length of the message in bytes.
    pub bytes: usize,
    /// Whether the operation was cancelled instead of completed.
    pub cancelled: bool,
}

impl Status {
    pub(crate) fn new(source: usize, tag: i32, bytes: usize) -> Self {
        Status {
            source,
            tag,
            bytes,
            cancelled: false,
        }
    }

    pub(crate) fn cancelled() -> Self {
        Status {
            cancelled: true,
            ..Status::default()
        }
    }

    /// Number of whole `T` elements in the message (`MPI_Get_count`).
    pub fn count<T>(&self) -> usize {
        self.bytes
            .checked_div(std::mem::size_of::<T>())
            .unwrap_or(0)
    }
}

/// Which sender a receive accepts: one rank, or any ([`ANY_SOURCE`]).
///
/// A `usize` converts into `Source::Rank`, so `comm.recv(&mut buf, 3, 0)` works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Only this rank.
    Rank(usize),
    /// Any rank of the communicator.
    Any,
}

impl From<usize> for Source {
    fn from(rank: usize) -> Self {
        Source::Rank(rank)
    }
}

/// Which tag a receive accepts: one tag, or any ([`ANY_TAG`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagMatch {
    /// Only this tag.
    Tag(i32),
    /// Any tag.
    Any,
}

impl From<i32> for TagMatch {
    fn from(tag: i32) -> Self {
        TagMatch::Tag(tag)
    }
}

/// Receive from any rank (`MPI_ANY_SOURCE`).
pub const ANY_SOURCE: Source = Source::Any;
/// Receive with any tag (`MPI_ANY_TAG`).
pub const ANY_TAG: TagMatch = TagMatch::Any;

/// The largest user tag (`MPI_TAG_UB`). Tags above it are reserved for the runtime
/// (the MPI transport encodes rank-threads in them).
pub const TAG_UB: i32 = (1 << 24) - 1;

/// Bytes of attached buffer charged per buffered message on top of its payload
/// (`MPI_BSEND_OVERHEAD`; the same value as Open MPI's, so attach sizes computed
/// for one transport fit the other).
pub const BSEND_OVERHEAD: usize = 128;
