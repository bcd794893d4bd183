//! The wrapped-key record a blockcrypt disk carries (JSON in the luksmeta slot).
#![no_main]
use blockcrypt::record::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(r) = Record::parse(data) else { return };
    assert_eq!(Record::parse(&r.to_bytes()).unwrap(), r);
});
