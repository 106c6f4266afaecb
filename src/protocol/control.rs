//! CONTROL frames (extension 0x12): one UTF-8 JSON object, for session open / close / replay /
//! errors.
//!
//! Shape is [byte length, 1] (dim0 must equal the payload size, a redundant check like the
//! token count of TOKENS), no flags; seqPos is the session position modulo 2^16 when the
//! sender knows it, else 0. The frame layer accepts any JSON object, so newer senders can add
//! fields or operations; [`ControlMessage`] is the vocabulary Synapse understands today,
//! selected by the `"op"` key.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::ProtocolError;
use super::frame::{Frame, Limits};
use super::types::{Flags, MessageType};

/// A CONTROL frame's JSON object.
#[derive(Clone, Debug, PartialEq)]
pub struct Control {
    /// The object.
    pub object: Map<String, Value>,
}

/// The control operations Synapse sends (`{"op": ..., ...}`); the session is the frame's
/// requestId. Unknown fields are ignored so senders can add them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlMessage {
    /// Opens the session on the receiver (allocates its per-session state, e.g. KV cache).
    Open {
        /// Activation encoding the sender will use ("f32", "int8", "int8-delta", "int4", "rice").
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encoding: Option<String>,
    },
    /// The frames that follow rebuild the session's state (KV cache) up to sequence length
    /// `to_position` (the real position, not modulo 2^16); no output is expected for them.
    Replay {
        /// Sequence length reached when the replay is complete.
        to_position: u64,
    },
    /// Ends the session; the receiver frees everything it held for it.
    Close {
        /// Why, for logs ("done", "cancelled", "node lost", ...).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Something went wrong with the session; the receiver should treat it as closed.
    Error {
        /// What happened, for humans.
        message: String,
    },
}

impl Control {
    /// Wraps a JSON value, which must be an object.
    pub fn new(value: Value) -> Result<Control, ProtocolError> {
        match value {
            Value::Object(object) => Ok(Control { object }),
            other => Err(ProtocolError::JsonNotObject {
                kind: json_kind(&other),
            }),
        }
    }

    /// The object for a known control message.
    pub fn from_message(message: &ControlMessage) -> Control {
        match serde_json::to_value(message) {
            Ok(Value::Object(object)) => Control { object },
            // Internally tagged enums of structs always serialize to objects.
            _ => Control { object: Map::new() },
        }
    }

    /// Interprets the object as a known control message.
    pub fn message(&self) -> Result<ControlMessage, ProtocolError> {
        serde_json::from_value(Value::Object(self.object.clone())).map_err(|e| {
            ProtocolError::UnknownControl {
                reason: e.to_string(),
            }
        })
    }

    /// Builds the frame: compact JSON, shape [length, 1].
    pub fn to_frame(&self, seq_pos: u16, request_id: u32) -> Frame {
        let payload = Value::Object(self.object.clone()).to_string().into_bytes();
        Frame {
            msg_type: MessageType::Control,
            flags: Flags::default(),
            seq_pos,
            request_id,
            dim0: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            dim1: 1,
            payload,
        }
    }

    /// Reads and validates a CONTROL frame.
    pub fn from_frame(frame: &Frame, limits: &Limits) -> Result<Control, ProtocolError> {
        let t = MessageType::Control;
        if frame.msg_type != t {
            return Err(ProtocolError::WrongType {
                expected: t,
                got: frame.msg_type,
            });
        }
        frame.flags.check_for(t)?;
        let len = frame.payload.len();
        if frame.dim1 != 1 || frame.dim0 as usize != len {
            let reason = "must be [payload byte length, 1]";
            return Err(ProtocolError::BadShape {
                msg_type: t,
                dim0: frame.dim0,
                dim1: frame.dim1,
                reason,
            });
        }
        if len as u64 > limits.max_payload_bytes() {
            let (size, max) = (len as u64, limits.max_payload_bytes());
            return Err(ProtocolError::FrameTooLarge { size, max });
        }
        let text = std::str::from_utf8(&frame.payload).map_err(|e| ProtocolError::InvalidUtf8 {
            at: e.valid_up_to(),
        })?;
        let value: Value = serde_json::from_str(text).map_err(|e| ProtocolError::InvalidJson {
            reason: e.to_string(),
        })?;
        Control::new(value)
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_non_objects_are_refused() {
        let l = Limits::default();
        let msg = ControlMessage::Close {
            reason: Some("done".into()),
        };
        let frame = Control::from_message(&msg).to_frame(0, 3);
        assert_eq!(frame.payload, br#"{"op":"close","reason":"done"}"#);
        assert_eq!(
            Control::from_frame(&frame, &l).unwrap().message().unwrap(),
            msg
        );
        let mut arr = frame.clone();
        arr.payload = b"[1]".to_vec();
        arr.dim0 = 3;
        assert!(matches!(
            Control::from_frame(&arr, &l),
            Err(ProtocolError::JsonNotObject { .. })
        ));
        arr.payload = vec![b'"', 0xFF, b'"'];
        assert!(matches!(
            Control::from_frame(&arr, &l),
            Err(ProtocolError::InvalidUtf8 { at: 1 })
        ));
        let unknown = Control::new(serde_json::json!({"op": "dance"})).unwrap();
        assert!(matches!(
            unknown.message(),
            Err(ProtocolError::UnknownControl { .. })
        ));
    }
}
