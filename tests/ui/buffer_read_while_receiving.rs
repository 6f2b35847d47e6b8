// While a receive owns the buffer, the program cannot look at it.
fn main() {
    let _ = courier::run(1, |comm| {
        let mut buf = [0u8; 4];
        comm.scope(|s| {
            let r = s.irecv(&mut buf, 0, 0).unwrap();
            println!("{}", buf[0]);
            r.wait().unwrap();
        });
        Ok(())
    });
}
