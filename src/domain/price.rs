//! A listing price: exact decimal money, 0 ≤ price ≤ 99,999,999.99, at most two
//! decimals — the range of the `NUMERIC(10,2)` column, so PostgreSQL never rounds or
//! overflows what we accept.

use std::fmt;

use rust_decimal::Decimal;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Price(Decimal);

impl Price {
    /// 99,999,999.99 (9_999_999_999 × 10⁻²; `from_parts` takes the low and middle 32 bits).
    pub const MAX: Decimal = Decimal::from_parts(1_410_065_407, 2, 0, false, 2);

    /// Parses a plain decimal such as `1250`, `1250.5` or `1250.50`. Refuses signs,
    /// exponents, separators, `NaN`, more than two decimals and out-of-range values.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("enter a price".into());
        }
        let (int_part, frac_part) = match s.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (s, None),
        };
        let digits = |p: &str| p.chars().all(|c| c.is_ascii_digit());
        let plain = digits(int_part)
            && frac_part.is_none_or(|f| !f.is_empty() && digits(f))
            && !(int_part.is_empty() && frac_part.is_none());
        if s.starts_with('-') {
            return Err("the price cannot be negative".into());
        }
        if !plain {
            return Err("use a plain number such as 1250 or 1250.50".into());
        }
        if frac_part.is_some_and(|f| f.len() > 2) {
            return Err("use at most two decimal places".into());
        }
        // Strip leading zeros so a long run of them cannot overflow the parser.
        let int_trimmed = int_part.trim_start_matches('0');
        if int_trimmed.len() > 8 {
            return Err("the price cannot exceed 99,999,999.99".into());
        }
        let normalised = format!(
            "{}.{}",
            if int_trimmed.is_empty() {
                "0"
            } else {
                int_trimmed
            },
            frac_part.unwrap_or("0")
        );
        let mut value: Decimal = normalised
            .parse()
            .map_err(|_| "use a plain number such as 1250 or 1250.50".to_string())?;
        if value > Self::MAX {
            return Err("the price cannot exceed 99,999,999.99".into());
        }
        value.rescale(2);
        Ok(Self(value))
    }

    /// Wraps a value read back from the database (already in range).
    pub fn from_db(value: Decimal) -> Self {
        let mut v = value;
        v.rescale(2);
        Self(v)
    }

    pub fn value(self) -> Decimal {
        self.0
    }

    /// `1234567.5` → `"1,234,567.50"`.
    pub fn display(self) -> String {
        format_money(self.0)
    }
}

impl fmt::Display for Price {
    /// The plain decimal string with two decimals, as the API shows it (`"1250.00"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}", self.0)
    }
}

/// Formats money with thousands separators and exactly two decimals.
pub fn format_money(value: Decimal) -> String {
    let plain = format!("{:.2}", value.abs());
    let (int_part, frac) = plain.split_once('.').unwrap_or((&plain, "00"));
    let mut grouped = String::with_capacity(int_part.len() + int_part.len() / 3 + 4);
    for (i, c) in int_part.chars().enumerate() {
        if i > 0 && (int_part.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if value.is_sign_negative() && !value.is_zero() {
        "-"
    } else {
        ""
    };
    format!("{sign}{grouped}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_decimals_within_range_are_accepted() {
        for (raw, shown) in [
            ("0", "0.00"),
            ("1250", "1250.00"),
            ("1250.5", "1250.50"),
            (" 12.34 ", "12.34"),
            ("99999999.99", "99999999.99"),
            ("000000000001.10", "1.10"),
            (".5", "0.50"),
        ] {
            assert_eq!(Price::parse(raw).unwrap().to_string(), shown, "{raw}");
        }
    }

    #[test]
    fn malformed_or_out_of_range_prices_are_refused() {
        for raw in [
            "",
            "  ",
            "NaN",
            "nan",
            "inf",
            "1e5",
            "-1",
            "-0",
            "+5",
            "1.234",
            "abc",
            "1,000",
            "100000000",
            "99999999.999",
            "1.",
            ".",
            "1 000",
            "0x10",
            "１２",
        ] {
            assert!(Price::parse(raw).is_err(), "{raw:?} should be refused");
        }
    }

    #[test]
    fn money_is_shown_with_thousands_separators() {
        assert_eq!(Price::parse("1234567.5").unwrap().display(), "1,234,567.50");
        assert_eq!(Price::parse("999").unwrap().display(), "999.00");
        assert_eq!(Price::parse("1000").unwrap().display(), "1,000.00");
        assert_eq!(Price::parse("0").unwrap().display(), "0.00");
    }
}
