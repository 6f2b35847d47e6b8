// A send buffer cannot be modified while a nonblocking send may read it.
fn main() {
    let _ = courier::run(1, |comm| {
        let mut data = vec![1u8; 4];
        comm.scope(|s| {
            let r = s.isend(&data, 0, 0).unwrap();
            data[0] = 2;
            r.wait().unwrap();
        });
        Ok(())
    });
}
