//! The one error type of courier.

/// What can go wrong in a courier call.
///
/// Every variant says exactly what was wrong and, where it matters, what was
/// (not) done: a failed `bsend` or `rsend` sent nothing, a truncated receive
/// consumed the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A rank outside `0..size` was named as destination or source.
    #[error("invalid rank {rank}: this communicator has ranks 0..{size}")]
    InvalidRank {
        /// The rank that was given.
        rank: usize,
        /// The size of the communicator.
        size: usize,
    },
    /// A tag that is negative or above [`TAG_UB`](crate::TAG_UB) (the tags above are
    /// reserved for the runtime).
    #[error("invalid tag {tag}: user tags are 0..={ub} (larger ones are reserved)", ub = crate::TAG_UB)]
    InvalidTag {
        /// The tag that was given.
        tag: i32,
    },
    /// A buffered send needed more space than the attached buffer has free.
    /// Nothing was sent.
    #[error(
        "bsend needs {needed} bytes of attached buffer but only {free} are free; nothing was sent"
    )]
    BufferExhausted {
        /// Bytes the message needs (payload + [`BSEND_OVERHEAD`](crate::BSEND_OVERHEAD)).
        needed: usize,
        /// Bytes free in the attached buffer.
        free: usize,
    },
    /// A buffered send without an attached buffer, or a detach with none attached.
    #[error("no buffer is attached (call attach_buffer before bsend)")]
    NoBufferAttached,
    /// `attach_buffer` while a buffer is already attached.
    #[error("a buffer of {size} bytes is already attached (detach it first)")]
    BufferAlreadyAttached {
        /// Size of the buffer that is attached.
        size: usize,
    },
    /// An MPI call failed (cluster mode); MPI's own error string says why.
    #[error("{call} failed with MPI error {code}: {message}")]
    Mpi {
        /// The MPI function that failed.
        call: &'static str,
        /// Its return code.
        code: i32,
        /// `MPI_Error_string` of the code.
        message: String,
    },
    /// A ready send found no matching receive posted. Nothing was delivered and
    /// the receiver was not touched.
    #[error("ready send to rank {dest} with tag {tag}: no matching receive is posted; nothing was delivered")]
    NotReady {
        /// Destination rank.
        dest: usize,
        /// Tag of the send.
        tag: i32,
    },
    /// The matched message is larger than the receive buffer. The message was
    /// consumed; the buffer was not written.
    #[error("message of {message} bytes does not fit the receive buffer of {buffer} bytes (message consumed)")]
    Truncated {
        /// Message length in bytes.
        message: usize,
        /// Buffer length in bytes.
        buffer: usize,
    },
    /// The message length is not a whole number of elements of the receive type.
    /// The message was consumed; the buffer was not written.
    #[error("message of {bytes} bytes is not a whole number of {type_name} (size {size}, align {align})")]
    TypeMismatch {
        /// Message length in bytes.
        bytes: usize,
        /// The element type asked for.
        type_name: &'static str,
        /// `size_of` the element type.
        size: usize,
        /// `align_of` the element type.
        align: usize,
    },
    /// A collective was given buffers of inconsistent lengths.
    #[error("{what}: expected {expected} elements, got {got}")]
    CountMismatch {
        /// Which argument or contribution was wrong.
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// The request has already been completed and reported.
    #[error("the request is not active (it was already completed or cancelled)")]
    InactiveRequest,
    /// Another rank failed (panicked or returned an error); this operation
    /// could not complete.
    #[error("rank {rank} failed, so this operation cannot complete")]
    PeerFailed {
        /// The rank that failed first.
        rank: usize,
    },
    /// The rank this operation depends on has finished (its closure returned)
    /// without sending, or receiving, the message waited for: the operation can
    /// never complete. (In MPI this would hang.)
    #[error("rank {rank} has finished, so this operation can never complete")]
    PeerFinished {
        /// The rank (in the communicator) that finished.
        rank: usize,
    },
    /// A rank panicked; returned by [`Runtime::run`](crate::Runtime::run).
    #[error("rank {rank} panicked: {message}")]
    RankPanicked {
        /// The rank (in the world communicator).
        rank: usize,
        /// The panic message.
        message: String,
    },
    /// A rank's closure returned an error; returned by [`Runtime::run`](crate::Runtime::run).
    #[error("rank {rank} failed: {source}")]
    RankFailed {
        /// The rank (in the world communicator).
        rank: usize,
        /// The error it returned.
        source: Box<Error>,
    },
    /// The runtime was configured with an impossible setting.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The machine's topology could not be read (hwloc failed to load, or this
    /// process's cpuset is empty). [`Runtime::run`](crate::Runtime::run) does not
    /// return it: it warns and runs the ranks unpinned.
    #[error("topology: {0}")]
    Topology(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
