//! Title, location and description of a listing. Lengths are counted in characters
//! (what the `VARCHAR(n)` columns count), after trimming. Text that would look empty, or
//! display otherwise than it reads, is refused with a message naming the character.

use std::fmt;

/// Unicode format characters (general category Cf, Unicode 16): invisible, and some
/// reorder the text around them (the bidi overrides and isolates), so a title can show
/// something other than what is stored. All of them are refused except U+200C and
/// U+200D (zero-width non-joiner and joiner), which Persian, Indic scripts and emoji
/// sequences need to be spelled right.
const FORMAT_CHARS: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),   // soft hyphen
    ('\u{0600}', '\u{0605}'),   // Arabic number signs
    ('\u{061C}', '\u{061C}'),   // Arabic letter mark
    ('\u{06DD}', '\u{06DD}'),   // Arabic end of ayah
    ('\u{070F}', '\u{070F}'),   // Syriac abbreviation mark
    ('\u{0890}', '\u{0891}'),   // Arabic pound and piastre marks above
    ('\u{08E2}', '\u{08E2}'),   // Arabic disputed end of ayah
    ('\u{180E}', '\u{180E}'),   // Mongolian vowel separator
    ('\u{200B}', '\u{200B}'),   // zero-width space
    ('\u{200E}', '\u{200F}'),   // left-to-right and right-to-left marks
    ('\u{202A}', '\u{202E}'),   // bidi embeddings, pop and overrides
    ('\u{2060}', '\u{2064}'),   // word joiner, invisible operators
    ('\u{2066}', '\u{206F}'),   // bidi isolates, deprecated format characters
    ('\u{FEFF}', '\u{FEFF}'),   // zero-width no-break space (byte order mark)
    ('\u{FFF9}', '\u{FFFB}'),   // interlinear annotation controls
    ('\u{110BD}', '\u{110BD}'), // Kaithi number sign
    ('\u{110CD}', '\u{110CD}'), // Kaithi number sign above
    ('\u{13430}', '\u{1343F}'), // Egyptian hieroglyph format controls
    ('\u{1BCA0}', '\u{1BCA3}'), // shorthand format controls
    ('\u{1D173}', '\u{1D17A}'), // musical symbol format controls
    ('\u{E0001}', '\u{E0001}'), // language tag
    ('\u{E0020}', '\u{E007F}'), // tag characters
];

/// Characters that are neither white space nor format characters but still draw
/// nothing (Unicode's other default-ignorable code points, and the blank braille
/// pattern): allowed, but they do not make a title or location visible.
const BLANK_CHARS: &[(char, char)] = &[
    ('\u{034F}', '\u{034F}'),   // combining grapheme joiner
    ('\u{115F}', '\u{1160}'),   // Hangul choseong and jungseong fillers
    ('\u{17B4}', '\u{17B5}'),   // Khmer inherent vowels
    ('\u{180B}', '\u{180D}'),   // Mongolian free variation selectors
    ('\u{180F}', '\u{180F}'),   // Mongolian free variation selector four
    ('\u{200C}', '\u{200D}'),   // zero-width non-joiner and joiner
    ('\u{2800}', '\u{2800}'),   // braille pattern blank
    ('\u{3164}', '\u{3164}'),   // Hangul filler
    ('\u{FE00}', '\u{FE0F}'),   // variation selectors
    ('\u{FFA0}', '\u{FFA0}'),   // halfwidth Hangul filler
    ('\u{E0100}', '\u{E01EF}'), // variation selectors supplement
];

fn in_ranges(c: char, ranges: &[(char, char)]) -> bool {
    ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi)
}

/// Why `c` may not be in a field (`multiline`: the description), if it may not:
/// - control characters (category Cc: U+0000–U+001F, U+007F–U+009F), except tab, line
///   feed and carriage return in the description;
/// - the format characters of `FORMAT_CHARS`;
/// - U+2028 and U+2029 (line and paragraph separators) outside the description;
/// - U+FFFD, the replacement character, which is what bytes of a submitted form that
///   are not valid UTF-8 are decoded to: such text is refused rather than stored garbled.
fn refused(c: char, multiline: bool) -> Option<&'static str> {
    match c {
        '\t' | '\n' | '\r' if multiline => None,
        c if c.is_control() && multiline => {
            Some("a control character (only line breaks and tabs are allowed)")
        }
        c if c.is_control() => Some("a control character (such as a line break or a tab)"),
        '\u{2028}' | '\u{2029}' if !multiline => Some("a line break"),
        c if in_ranges(c, FORMAT_CHARS) => Some(
            "an invisible formatting character (such as a zero-width space or a \
             text-direction override)",
        ),
        '\u{FFFD}' => {
            Some("the replacement mark “�” left by text that was not sent as valid UTF-8")
        }
        _ => None,
    }
}

/// Whether `c` shows as something on the page.
fn is_visible(c: char) -> bool {
    !c.is_whitespace() && refused(c, false).is_none() && !in_ranges(c, BLANK_CHARS)
}

/// The checks every field shares; `required` fields need a visible character.
fn check(value: &str, field: &str, required: bool, multiline: bool) -> Result<(), String> {
    if required && value.is_empty() {
        return Err(format!("enter a {field}"));
    }
    if let Some((c, why)) = value
        .chars()
        .find_map(|c| refused(c, multiline).map(|why| (c, why)))
    {
        return Err(format!(
            "the {field} contains U+{:04X}, {why}; remove it",
            c as u32
        ));
    }
    if required && !value.chars().any(is_visible) {
        return Err(format!(
            "enter a {field} with at least one visible character"
        ));
    }
    Ok(())
}

macro_rules! bounded_text {
    ($name:ident, $field:literal, $max:expr, required = $required:expr, multiline = $multiline:expr) => {
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub const MAX_CHARS: usize = $max;

            pub fn parse(raw: &str) -> Result<Self, String> {
                let value = raw.trim();
                check(value, $field, $required, $multiline)?;
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

bounded_text!(Title, "title", 200, required = true, multiline = false);
bounded_text!(
    Location,
    "location",
    100,
    required = true,
    multiline = false
);
// Generous but bounded: a description is shown on one page.
bounded_text!(
    Description,
    "description",
    10_000,
    required = false,
    multiline = true
);

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

    #[test]
    fn a_title_or_location_of_only_invisible_characters_is_refused() {
        for blank in [
            "\u{200B}\u{200B}",
            "\u{3164}",
            "\u{2800}\u{FE0F}",
            "\u{200D}",
        ] {
            assert!(Title::parse(blank).is_err(), "{blank:?}");
            assert!(Location::parse(blank).is_err(), "{blank:?}");
        }
        assert!(
            Title::parse("\u{3164}")
                .unwrap_err()
                .contains("visible character")
        );
    }

    #[test]
    fn bidi_overrides_isolates_and_other_format_characters_are_refused_by_code_point() {
        for c in [
            '\u{202E}',
            '\u{202A}',
            '\u{2066}',
            '\u{2069}',
            '\u{200F}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{E0041}',
        ] {
            let text = format!("Loft{c}gnirts");
            let err = Title::parse(&text).unwrap_err();
            assert!(err.contains(&format!("U+{:04X}", c as u32)), "{err}");
            assert!(Location::parse(&text).is_err(), "{c:?}");
            assert!(Description::parse(&text).is_err(), "{c:?}");
        }
    }

    #[test]
    fn joiners_that_scripts_and_emoji_need_are_kept() {
        assert!(Title::parse("خانه\u{200C}ی نو").is_ok());
        assert!(Title::parse("Family 👨\u{200D}👩\u{200D}👧 home").is_ok());
        assert!(Title::parse("Café ☕\u{FE0F}").is_ok());
    }

    #[test]
    fn text_that_was_not_valid_utf8_is_refused_rather_than_stored_garbled() {
        // What the form decoder makes of `%FF%FEabc`.
        let err = Title::parse("\u{FFFD}\u{FFFD}abc").unwrap_err();
        assert!(err.contains("UTF-8"), "{err}");
        assert!(Description::parse("\u{FFFD}").is_err());
    }

    #[test]
    fn line_breaks_and_tabs_are_for_the_description_only() {
        for text in ["two\nlines", "two\r\nlines", "a\tb", "a\u{2028}b"] {
            assert!(Title::parse(text).is_err(), "{text:?}");
            assert!(Location::parse(text).is_err(), "{text:?}");
        }
        assert!(Description::parse("two\r\nlines\tand a tab\u{2028}").is_ok());
        assert!(Description::parse("bell\u{7}").is_err());
        assert!(Description::parse("next\u{85}line").is_err());
    }
}
