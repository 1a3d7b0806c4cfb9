//! The stored record decoders: a job, a schedule and a remote kind as the stores keep them
//! (JSON). A damaged record must be refused (the store reports it as corrupt), never
//! panic; a job record that decodes must encode and decode to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spindle::model::job::Job;
use spindle::model::schedule::Schedule;
use spindle::model::worker::RemoteKind;

fuzz_target!(|data: &[u8]| {
    if let Ok(job) = serde_json::from_slice::<Job>(data) {
        let text = serde_json::to_vec(&job).expect("a decoded job encodes");
        let again: Job = serde_json::from_slice(&text).expect("an encoded job decodes");
        assert_eq!(serde_json::to_vec(&again).expect("encodes"), text);
    }
    let _ = serde_json::from_slice::<Schedule>(data);
    let _ = serde_json::from_slice::<RemoteKind>(data);
});
