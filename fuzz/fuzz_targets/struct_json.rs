//! Args as they arrive: a protobuf `google.protobuf.Struct` decoded from bytes, then turned
//! into JSON as the API does. Never a panic; what converts must come back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use spindle::pb::json::{json_to_struct, struct_to_json};

fuzz_target!(|data: &[u8]| {
    let Ok(decoded) = prost_types::Struct::decode(data) else {
        return;
    };
    if let Ok(json) = struct_to_json(decoded, "args") {
        let again = struct_to_json(json_to_struct(&json), "args").expect("JSON converts back");
        assert_eq!(again, json);
    }
});
