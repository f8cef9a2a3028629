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

    /// The shortest plain form (`0150000.50` → `150000.5`, `12.00` → `12`): how a price
    /// stands in a URL, one spelling per value (the page cache keys on it).
    pub fn query_value(self) -> String {
        self.0.normalize().to_string()
    }

    /// How pages show it: `1234567.5` → `1,234,567.50`, written straight into a
    /// formatter (no allocation).
    pub fn display(self) -> Money {
        Money(self.0)
    }
}

impl fmt::Display for Price {
    /// The plain decimal string with two decimals, as the API shows it (`"1250.00"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}", self.0)
    }
}

/// Money with thousands separators and exactly two decimals, as a `Display`
/// (`-1234567.5` shows as `-1,234,567.50`).
#[derive(Clone, Copy, Debug)]
pub struct Money(pub Decimal);

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        // `{:.2}` of any Decimal fits easily: at most 29 digits, a point and two decimals.
        let mut plain = StackStr::<48>::default();
        write!(plain, "{:.2}", self.0.abs())?;
        let plain = plain.as_str();
        let (int_part, frac) = plain.split_once('.').unwrap_or((plain, "00"));
        if self.0.is_sign_negative() && !self.0.is_zero() {
            f.write_char('-')?;
        }
        let first = match int_part.len() % 3 {
            0 => 3.min(int_part.len()),
            n => n,
        };
        f.write_str(&int_part[..first])?;
        let mut rest = &int_part[first..];
        while !rest.is_empty() {
            f.write_char(',')?;
            f.write_str(&rest[..3])?;
            rest = &rest[3..];
        }
        f.write_char('.')?;
        f.write_str(frac)
    }
}

/// A small string on the stack, for formatting without allocating; writing past its
/// capacity is a formatting error.
struct StackStr<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackStr<N> {
    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so the bytes are valid UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl<const N: usize> Default for StackStr<N> {
    fn default() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }
}

impl<const N: usize> fmt::Write for StackStr<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > N {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
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
    fn a_price_has_one_shortest_spelling_in_urls() {
        for (raw, canonical) in [
            ("0", "0"),
            ("0.00", "0"),
            ("0150000.50", "150000.5"),
            ("12.00", "12"),
            (".5", "0.5"),
            ("1250", "1250"),
        ] {
            assert_eq!(Price::parse(raw).unwrap().query_value(), canonical, "{raw}");
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
        assert_eq!(
            Price::parse("1234567.5").unwrap().display().to_string(),
            "1,234,567.50"
        );
        assert_eq!(Price::parse("999").unwrap().display().to_string(), "999.00");
        assert_eq!(
            Price::parse("1000").unwrap().display().to_string(),
            "1,000.00"
        );
        assert_eq!(Price::parse("0").unwrap().display().to_string(), "0.00");
        assert_eq!(
            Price::parse("123456").unwrap().display().to_string(),
            "123,456.00"
        );
        assert_eq!(
            Price::parse("99999999.99").unwrap().display().to_string(),
            "99,999,999.99"
        );
        assert_eq!(
            Money(Decimal::new(-123_456_750, 2)).to_string(),
            "-1,234,567.50"
        );
        assert_eq!(Money(Decimal::new(-5, 1)).to_string(), "-0.50");
        let rounded = Decimal::new(12_345, 3);
        assert_eq!(
            Money(rounded).to_string(),
            format!("{rounded:.2}"),
            "rounded like {{:.2}}"
        );
        assert_eq!(Money(Decimal::MAX).to_string().len(), 29 + 9 + 3);
    }
}
