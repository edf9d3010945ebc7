//! Inputs users control, read without a panic whatever they hold: context files in every
//! format (`rlm run --context`, eval datasets, `rlm replay --context`).

use std::io::Write;

use proptest::prelude::*;
use rlm::ContextInput;
use rlm_sandbox::ContextFormat;

/// Bytes that look like the formats' edges: JSON pieces, newlines, invalid UTF-8.
fn contextish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b"\"".to_vec()),
        Just(b",".to_vec()),
        Just(b":".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"1e999".to_vec()),
        Just(b"\xff\xfe".to_vec()),
        Just(b"\xef\xbb\xbf".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
        "\\PC{0,8}".prop_map(String::into_bytes),
    ];
    proptest::collection::vec(piece, 0..30).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn any_context_file_loads_or_says_why(
        bytes in contextish(),
        ext in prop_oneof![Just("txt"), Just("json"), Just("jsonl"), Just("md")],
        format in prop_oneof![
            Just(ContextFormat::Auto),
            Just(ContextFormat::Text),
            Just(ContextFormat::Json),
            Just(ContextFormat::Jsonl),
        ],
    ) {
        let mut file = tempfile::Builder::new()
            .suffix(&format!(".{ext}"))
            .tempfile()
            .unwrap();
        file.write_all(&bytes).unwrap();
        if let Ok(input) = ContextInput::load(file.path(), format) {
            // Whatever loaded has a JSON form that loads back the same way.
            let again = ContextInput::from_json(input.to_json());
            prop_assert_eq!(again.to_json(), input.to_json());
        }
    }
}
