//! Flight-recorder dumps as `ferrocoll-probe doctor` reads them (src/recorder/dump.rs): a
//! dump that parses has its rank inside its world and survives a round trip through JSON,
//! and the doctor's analysis of it ends, naming only ranks of the world.
#![no_main]

use ferrocoll::recorder::doctor::diagnose;
use ferrocoll::recorder::parse_dump;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(r) = parse_dump(data) else {
        return;
    };
    assert!(r.rank < r.world);
    let text = serde_json::to_vec(&r).expect("a record serialises");
    assert_eq!(parse_dump(&text).ok().as_ref(), Some(&r));
    for report in diagnose(std::slice::from_ref(&r)) {
        assert_eq!(report.world, r.world);
        for f in &report.findings {
            let _ = f.describe();
        }
    }
});
