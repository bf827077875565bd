//! Check for the `control_decode` fuzz target, shared with
//! `metering/tests/fuzz_replay_control.rs` (included there with `#[path]`).
//!
//! Arbitrary bytes go to `ferry_metering::decode` and `decode_prefix`. Neither may panic;
//! every accepted frame must re-encode to exactly the bytes it was decoded from, and the
//! two decoders must agree with each other.

use ferry_metering::{FrameError, HEADER_LEN, MAX_FRAME_LEN, decode, decode_prefix, encode};

/// Returns whether `data` is exactly one valid frame.
pub(crate) fn check(data: &[u8]) -> bool {
    let whole = decode(data);
    if let Ok(msg) = &whole {
        assert_eq!(encode(msg), data, "decode -> encode is not the identity");
    }
    match decode_prefix(data) {
        Ok((msg, used)) => {
            assert!(
                (HEADER_LEN..=data.len()).contains(&used) && used <= MAX_FRAME_LEN,
                "used {used} of {}",
                data.len()
            );
            let frame = data.get(..used).unwrap_or_default();
            assert_eq!(encode(&msg), frame, "prefix frame does not re-encode");
            assert_eq!(
                decode(frame).as_ref(),
                Ok(&msg),
                "prefix and whole disagree"
            );
            // decode() accepts exactly when the frame fills the buffer.
            assert_eq!(whole.is_ok(), used == data.len());
            if used < data.len() {
                assert_eq!(
                    whole,
                    Err(FrameError::TrailingBytes(data.len() - used)),
                    "trailing bytes not reported"
                );
            }
        }
        Err(FrameError::Incomplete { need, have }) => {
            assert_eq!(have, data.len());
            assert!(
                need > have && need <= MAX_FRAME_LEN,
                "need {need} have {have}"
            );
            assert!(whole.is_err());
        }
        Err(e) => {
            assert_eq!(whole, Err(e), "decode and decode_prefix disagree");
        }
    }
    whole.is_ok()
}
