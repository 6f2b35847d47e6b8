// A request cannot leave its scope (and so cannot outlive its buffer).
fn main() {
    let _ = courier::run(1, |comm| {
        let buf = [0u8; 4];
        let r = comm.scope(|s| s.isend(&buf, 0, 0).unwrap());
        drop(r);
        Ok(())
    });
}
