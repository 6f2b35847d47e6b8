// A receive buffer must outlive the scope: the scope's end may still settle
// the receive, so a buffer that dies inside the scope is rejected.
fn main() {
    let _ = courier::run(1, |comm| {
        comm.scope(|s| {
            let mut buf = [0u8; 4];
            let _r = s.irecv(&mut buf, 0, 0);
        });
        Ok(())
    });
}
