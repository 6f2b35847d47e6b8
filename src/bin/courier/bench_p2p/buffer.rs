//! Message buffers whose every page is written before they are used.

use std::ops::{Deref, DerefMut};

/// Alignment of every buffer: a page.
const PAGE: usize = 4096;

/// A message buffer, page-aligned and written through before use, as the OSU
/// benchmarks prepare theirs (`memset` to a character).
///
/// Both matter for what a measurement means:
/// - `vec![0; size]` asks for zeroed memory, which a fresh mapping already
///   is, so its pages are never written: reading them reads the kernel's one
///   shared zero page, always in cache. A 1 MiB ping-pong whose sender's buffer
///   was such a buffer measured 57–73 µs here with raw `MPI_Send`, against
///   95–118 µs from a buffer holding data; and which buffers came from a fresh
///   mapping depended on the order modes ran in (glibc serves later large
///   allocations from the heap), so the first raw mode measured always looked
///   fastest.
/// - Where a buffer starts changes what a copy costs (a 1 MiB receive buffer
///   16 bytes off a page took about 15 % longer than a page-aligned one).
pub(crate) struct Buffer {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Buffer {
    /// `len` bytes, each `byte`, every page written.
    pub(crate) fn filled(len: usize, byte: u8) -> Buffer {
        // Not `vec![byte; n]`: for `byte == 0` that is a zeroed allocation,
        // whose pages nothing writes. `resize` writes every byte.
        let mut storage = Vec::with_capacity(len + PAGE);
        storage.resize(len + PAGE, byte);
        let start = storage.as_ptr().align_offset(PAGE);
        Buffer {
            storage,
            start,
            len,
        }
    }

    /// `n` buffers of `len` bytes, each `byte`.
    pub(crate) fn many(n: usize, len: usize, byte: u8) -> Vec<Buffer> {
        (0..n).map(|_| Buffer::filled(len, byte)).collect()
    }
}

impl Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_page_and_holds_len_bytes() {
        for len in [0, 1, 8, 4095, 4096, 1 << 20] {
            for byte in [0, 7] {
                let b = Buffer::filled(len, byte);
                assert_eq!(b.as_ptr() as usize % PAGE, 0);
                assert_eq!(b.len(), len);
                assert!(b.iter().all(|&x| x == byte));
            }
        }
    }
}
