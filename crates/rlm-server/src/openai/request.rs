//! `POST /v1/chat/completions` bodies, parsed into typed structures in two passes over the
//! bytes read: the model and `stream` first (everything else skipped, not copied), so an unknown
//! or refused model costs no copy of the conversation; then the messages, each content read
//! straight into one string (a list of parts is joined as it is read, never kept as values), at
//! most [`MAX_MESSAGES`] of them. What the parse holds is then at most the size of the body.

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::ApiError;

/// Most messages a conversation may have.
pub const MAX_MESSAGES: usize = 10_000;

/// The small fields of a chat completion request.
#[derive(Debug, Deserialize)]
pub struct ChatHead {
    /// `rlm` or `rlm:<provider/model>`.
    pub model: String,
    /// Stream progress and the answer as SSE chunks.
    #[serde(default)]
    pub stream: bool,
}

/// A chat message as clients send it (content as a string or a list of parts with `text`).
#[derive(Debug, Deserialize)]
pub struct InMessage {
    /// `system`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// Its text: a string, or the `text` of its parts joined by newlines.
    #[serde(default, deserialize_with = "content_text")]
    pub content: String,
}

/// The conversation of a chat completion request (other fields are accepted and ignored).
#[derive(Debug, Deserialize)]
pub struct ChatMessages {
    /// The messages.
    #[serde(deserialize_with = "capped_messages")]
    pub messages: Vec<InMessage>,
}

fn not_json(e: &serde_json::Error) -> ApiError {
    ApiError::bad(format!(
        "the request body is not a chat completion request: {e}"
    ))
}

/// The model and `stream` of a request body.
pub fn head(bytes: &[u8]) -> Result<ChatHead, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| not_json(&e))
}

/// The messages of a request body.
pub fn messages(bytes: &[u8]) -> Result<Vec<InMessage>, ApiError> {
    serde_json::from_slice::<ChatMessages>(bytes)
        .map(|c| c.messages)
        .map_err(|e| not_json(&e))
}

fn capped_messages<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<InMessage>, D::Error> {
    struct Messages;
    impl<'de> Visitor<'de> for Messages {
        type Value = Vec<InMessage>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {MAX_MESSAGES} messages")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(m) = seq.next_element()? {
                if out.len() == MAX_MESSAGES {
                    return Err(de::Error::custom(format!(
                        "more than {MAX_MESSAGES} messages, the most this server takes"
                    )));
                }
                out.push(m);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Messages)
}

/// A content: a string, a list of parts (their `text` joined by newlines), anything else empty.
fn content_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Content;
    impl<'de> Visitor<'de> for Content {
        type Value = String;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string or a list of parts")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<String, E> {
            Ok(s.to_string())
        }

        fn visit_string<E: de::Error>(self, s: String) -> Result<String, E> {
            Ok(s)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
            let mut out = String::new();
            let mut first = true;
            while let Some(part) = seq.next_element::<PartText>()? {
                if let Some(t) = part.0 {
                    if !first {
                        out.push('\n');
                    }
                    out.push_str(&t);
                    first = false;
                }
            }
            Ok(out)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(String::new())
        }

        fn visit_unit<E: de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }

        fn visit_none<E: de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }

        fn visit_bool<E: de::Error>(self, _: bool) -> Result<String, E> {
            Ok(String::new())
        }

        fn visit_i64<E: de::Error>(self, _: i64) -> Result<String, E> {
            Ok(String::new())
        }

        fn visit_u64<E: de::Error>(self, _: u64) -> Result<String, E> {
            Ok(String::new())
        }

        fn visit_f64<E: de::Error>(self, _: f64) -> Result<String, E> {
            Ok(String::new())
        }
    }
    d.deserialize_any(Content)
}

/// A content part's `text`, when it is an object with a string `text`; nothing kept otherwise.
struct PartText(Option<String>);

impl<'de> Deserialize<'de> for PartText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Part;
        impl<'de> Visitor<'de> for Part {
            type Value = PartText;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a content part")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PartText, A::Error> {
                let mut text = None;
                while let Some(key) = map.next_key::<KeyIsText>()? {
                    if key.0 && text.is_none() {
                        text = map.next_value::<MaybeString>()?.0;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(PartText(text))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PartText, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(PartText(None))
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<PartText, E> {
                Ok(PartText(None))
            }

            fn visit_unit<E: de::Error>(self) -> Result<PartText, E> {
                Ok(PartText(None))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<PartText, E> {
                Ok(PartText(None))
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<PartText, E> {
                Ok(PartText(None))
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<PartText, E> {
                Ok(PartText(None))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<PartText, E> {
                Ok(PartText(None))
            }
        }
        d.deserialize_any(Part)
    }
}

/// Whether a map key is `text` (the key itself is not kept).
struct KeyIsText(bool);

impl<'de> Deserialize<'de> for KeyIsText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Key;
        impl Visitor<'_> for Key {
            type Value = KeyIsText;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<KeyIsText, E> {
                Ok(KeyIsText(s == "text"))
            }
        }
        d.deserialize_str(Key)
    }
}

/// A string, or nothing kept for any other value.
struct MaybeString(Option<String>);

impl<'de> Deserialize<'de> for MaybeString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = MaybeString;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<MaybeString, E> {
                Ok(MaybeString(Some(s.to_string())))
            }

            fn visit_string<E: de::Error>(self, s: String) -> Result<MaybeString, E> {
                Ok(MaybeString(Some(s)))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MaybeString, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeString(None))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MaybeString, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeString(None))
            }

            fn visit_unit<E: de::Error>(self) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
        }
        d.deserialize_any(Text)
    }
}

/// Split a conversation into (context, question) by the rule in the module docs.
pub fn split_conversation(messages: &[InMessage]) -> Result<(String, String), String> {
    let last = messages
        .iter()
        .rposition(|m| m.role == "user")
        .ok_or("the conversation has no user message: the last user message is the question")?;
    let question = messages[last].content.clone();
    let before: Vec<&str> = messages[..last]
        .iter()
        .map(|m| m.content.as_str())
        .filter(|t| !t.trim().is_empty())
        .collect();
    if !before.is_empty() {
        return Ok((before.join("\n\n"), question));
    }
    let trimmed = question.trim_end();
    match trimmed.rfind("\n\n") {
        Some(i) => Ok((trimmed[..i].to_string(), trimmed[i..].trim().to_string())),
        None => Ok((String::new(), question)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: &str, text: &str) -> InMessage {
        InMessage {
            role: role.into(),
            content: text.into(),
        }
    }

    #[test]
    fn the_split_rule() {
        let (c, q) =
            split_conversation(&[m("system", "DOC A"), m("user", "DOC B"), m("user", "q?")])
                .unwrap();
        assert_eq!((c.as_str(), q.as_str()), ("DOC A\n\nDOC B", "q?"));
        let (c, q) = split_conversation(&[m("user", "line 1\nline 2\n\nWhat is it?\n")]).unwrap();
        assert_eq!((c.as_str(), q.as_str()), ("line 1\nline 2", "What is it?"));
        let (c, q) = split_conversation(&[m("user", "just a question")]).unwrap();
        assert_eq!((c.as_str(), q.as_str()), ("", "just a question"));
        assert!(split_conversation(&[m("system", "x")]).is_err());
    }

    #[test]
    fn contents_are_read_into_one_string() {
        let body = br#"{"model": "rlm", "temperature": 0.2, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url",
              "image_url": {"url": "x"}}, {"text": ["no"]}, 7, "s", {"text": "b", "text2": 1}]},
            {"role": "system"}, {"role": "system", "content": null},
            {"role": "tool", "content": {"a": [1, 2]}}, {"role": "user", "content": "q\u00e9"}]}"#;
        let h = head(body).unwrap();
        assert_eq!((h.model.as_str(), h.stream), ("rlm", false));
        let ms = messages(body).unwrap();
        let texts: Vec<&str> = ms.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(texts, ["a\nb", "", "", "", "qé"]);
    }

    #[test]
    fn a_conversation_has_at_most_max_messages() {
        let one = r#"{"role":"user","content":"x"},"#;
        let body = |n: usize| {
            format!(
                r#"{{"model":"rlm","messages":[{}{{"role":"user"}}]}}"#,
                one.repeat(n - 1)
            )
        };
        assert_eq!(
            messages(body(MAX_MESSAGES).as_bytes()).unwrap().len(),
            MAX_MESSAGES
        );
        let e = messages(body(MAX_MESSAGES + 1).as_bytes()).unwrap_err();
        assert!(
            e.message.contains("at most") || e.message.contains("more than"),
            "{}",
            e.message
        );
    }
}
