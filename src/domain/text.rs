//! Title, location and description of a listing. Lengths are counted in characters
//! (what the `VARCHAR(n)` columns count), after trimming.

use std::fmt;

macro_rules! bounded_text {
    ($name:ident, $field:literal, $max:expr, required = $required:expr) => {
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub const MAX_CHARS: usize = $max;

            pub fn parse(raw: &str) -> Result<Self, String> {
                let value = raw.trim();
                if $required && value.is_empty() {
                    return Err(format!("enter a {}", $field));
                }
                if value
                    .chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
                {
                    return Err(format!("the {} contains control characters", $field));
                }
                let chars = value.chars().count();
                if chars > Self::MAX_CHARS {
                    return Err(format!(
                        "the {} can be at most {} characters (it has {chars})",
                        $field,
                        Self::MAX_CHARS
                    ));
                }
                Ok(Self(value.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

bounded_text!(Title, "title", 200, required = true);
bounded_text!(Location, "location", 100, required = true);
// Generous but bounded: a description is shown on one page.
bounded_text!(Description, "description", 10_000, required = false);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_trimmed_and_bounded_in_characters_not_bytes() {
        assert_eq!(Title::parse("  Loft  ").unwrap().as_str(), "Loft");
        assert!(Title::parse(&"é".repeat(200)).is_ok());
        assert!(Title::parse(&"é".repeat(201)).is_err());
        assert!(Title::parse("   ").is_err());
    }

    #[test]
    fn location_is_required_and_at_most_100_characters() {
        assert!(Location::parse("").is_err());
        assert!(Location::parse(&"a".repeat(100)).is_ok());
        assert!(Location::parse(&"a".repeat(101)).is_err());
    }

    #[test]
    fn description_may_be_empty_but_not_hold_control_characters() {
        assert_eq!(Description::parse("").unwrap().as_str(), "");
        assert!(Description::parse("two\nlines").is_ok());
        assert!(Description::parse("nul\u{0}").is_err());
    }
}
