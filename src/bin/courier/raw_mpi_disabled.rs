//! Without the `mpi` feature there is no MPI pair and no raw baseline.

use courier::{Comm, Result};

use crate::bench_p2p::{Lines, Record};

pub fn counterpart(_: &str) -> &'static str {
    "raw-send"
}

/// Never made: without MPI there is no raw counterpart to time.
pub enum RawPingPong {}

impl RawPingPong {
    pub fn interleaved(_: &Comm, _: &str, _: usize) -> Option<RawPingPong> {
        None
    }

    pub fn sample(&mut self, _: usize) -> Result<f64> {
        match *self {}
    }
}

pub fn baselines(_: &Comm, _: usize, _: usize, _: bool) -> Result<Vec<Record>> {
    Ok(Vec::new())
}

pub fn bandwidth(_: &Comm, _: usize, _: usize, _: bool) -> Result<Vec<Record>> {
    Ok(Vec::new())
}

pub fn bidirectional(_: &Comm, _: usize, _: usize, _: bool) -> Result<Vec<Record>> {
    Ok(Vec::new())
}

/// Never made: without MPI there are no processes to share lines between.
pub enum SharedLines {}

impl SharedLines {
    pub fn new() -> Option<SharedLines> {
        None
    }

    pub fn lines(&self) -> &Lines {
        match *self {}
    }
}
