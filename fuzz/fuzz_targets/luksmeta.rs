//! The luksmeta area in the gap after the LUKS1 keyslots (where the wrapped-key record lives):
//! parse, load every slot's data against its CRC, serialise back, store a record.
#![no_main]
use blockcrypt::luksmeta::Meta;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut m) = Meta::parse(data) else { return };
    for s in m.slots.clone() {
        let _ = m.load(data, &s.uuid);
    }
    assert_eq!(Meta::parse(&m.to_bytes()).map(|x| x.to_bytes()).ok(), Some(m.to_bytes()));
    let mut gap = data.to_vec();
    if m.store(&mut gap, &[9u8; 16], b"record").is_ok() {
        let back = Meta::parse(&gap).expect("a stored gap parses");
        assert_eq!(back.load(&gap, &[9u8; 16]).unwrap(), Some(&b"record"[..]));
    }
});
