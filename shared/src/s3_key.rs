//! Decoding of object keys as S3 event notifications carry them.
//!
//! S3 URL-encodes the key in an event the way HTML forms do: a space becomes `+`, and a literal
//! plus becomes `%2B`. Decoding `+` first and percent sequences second is the only order that
//! gives back the original key.

use percent_encoding::percent_decode_str;

/// Why an event key could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("object key {0:?} is not valid UTF-8 once percent-decoded")]
    NotUtf8(String),
    #[error("object key is empty")]
    Empty,
}

/// Decodes a key from an S3 event notification (`s3.object.key`).
pub fn decode_event_key(raw: &str) -> Result<String, KeyError> {
    if raw.is_empty() {
        return Err(KeyError::Empty);
    }
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| KeyError::NotUtf8(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_is_space_and_escaped_plus_is_plus() {
        assert_eq!(decode_event_key("a+b%2Bc%25.txt").unwrap(), "a b+c%.txt");
    }

    #[test]
    fn unicode_and_nested() {
        assert_eq!(
            decode_event_key("dir/sub/%C3%A9t%C3%A9+%F0%9F%8E%AC.mov").unwrap(),
            "dir/sub/été 🎬.mov"
        );
    }

    #[test]
    fn rejects_invalid_utf8_and_empty() {
        assert!(matches!(
            decode_event_key("%FF%FE"),
            Err(KeyError::NotUtf8(_))
        ));
        assert_eq!(decode_event_key(""), Err(KeyError::Empty));
    }
}
