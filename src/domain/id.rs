//! A listing id as it appears in a path: ASCII digits only, a positive `i64`. Leading
//! zeros are allowed and mean the same id (the page cache keys them to one page); a
//! sign, spaces or anything else make it no id at all ("not found").

pub fn parse_id(raw: &str) -> Option<i64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse::<i64>().ok().filter(|&id| id > 0)
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn only_plain_digits_name_an_id() {
        assert_eq!(parse_id("42"), Some(42));
        assert_eq!(parse_id("0042"), Some(42));
        for bad in [
            "",
            "0",
            "000",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1e3",
            "abc",
            "99999999999999999999",
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }
}
