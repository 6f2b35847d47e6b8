//! dup and split: isolated contexts, groups, ordering by key.

mod common;

use common::{run_ok, RANK_COUNTS};
use courier::{ANY_SOURCE, ANY_TAG};

#[test]
fn traffic_on_a_dup_never_matches_the_original() {
    run_ok(2, |comm| {
        let dup = comm.dup()?;
        assert_eq!((dup.rank(), dup.size()), (comm.rank(), comm.size()));
        if comm.rank() == 0 {
            dup.send(&[1u8], 1, 0)?;
            comm.send(&[2u8], 1, 0)?;
        } else {
            let mut b = [0u8];
            comm.recv(&mut b, ANY_SOURCE, ANY_TAG)?;
            assert_eq!(b, [2], "a world receive took a message sent on the dup");
            assert!(comm.iprobe(ANY_SOURCE, ANY_TAG)?.is_none());
            dup.recv(&mut b, 0, 0)?;
            assert_eq!(b, [1]);
        }
        Ok(())
    });
}

#[test]
fn split_groups_by_color_and_orders_by_key() {
    for p in RANK_COUNTS {
        run_ok(p, |comm| {
            let (me, p) = (comm.rank(), comm.size());
            // Colors by parity, keys reversing the order.
            let sub = comm
                .split(Some((me % 2) as u32), -(me as i32))?
                .expect("has a color");
            let members: Vec<usize> = (0..p).filter(|r| r % 2 == me % 2).rev().collect();
            assert_eq!(sub.size(), members.len());
            assert_eq!(sub.rank(), members.iter().position(|&r| r == me).unwrap());
            assert_eq!(sub.world_rank(), me);
            // Collectives run inside each group independently.
            let mut sum = [0u64];
            sub.all_reduce(&[me as u64], &mut sum, |a, b| a + b)?;
            assert_eq!(sum[0], members.iter().map(|&r| r as u64).sum::<u64>());
            // Point-to-point within the group uses group ranks.
            if sub.size() > 1 {
                let right = (sub.rank() + 1) % sub.size();
                let left = (sub.rank() + sub.size() - 1) % sub.size();
                let mut got = [0usize];
                sub.sendrecv(&[me], right, 0, &mut got, left, 0)?;
                assert_eq!(got[0], members[left]);
            }
            Ok(())
        });
    }
}

#[test]
fn split_with_no_color_opts_out_and_contexts_stay_distinct() {
    run_ok(4, |comm| {
        let me = comm.rank();
        let color = if me == 3 { None } else { Some(7) };
        let sub = comm.split(color, 0)?;
        assert_eq!(sub.is_some(), me != 3);
        if let Some(sub) = sub {
            assert_eq!(sub.size(), 3);
            // Same rank numbers as the world for 0..3, but another context.
            if me == 0 {
                sub.send(&[9u8], 1, 0)?;
                comm.send(&[8u8], 1, 0)?;
            }
            if me == 1 {
                let mut b = [0u8];
                sub.recv(&mut b, 0, 0)?;
                assert_eq!(b, [9]);
                comm.recv(&mut b, 0, 0)?;
                assert_eq!(b, [8]);
            }
        }
        comm.barrier()?;
        Ok(())
    });
}
