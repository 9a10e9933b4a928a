//! Dates of the proleptic Gregorian calendar for the timestamps the server writes
//! itself (RFC 3339 in the access log and a job's document), without a formatter: a
//! day count to its civil date, and fixed-width decimal digits.

/// The civil date `(year, month 1-12, day 1-31)` of day `days` counted from the Unix
/// epoch (1970-01-01 is day 0, earlier days are negative), proleptic Gregorian: eras
/// of 400 years (146,097 days) counted from 0000-03-01, so that a leap day ends each
/// era's years.
pub fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes the last `width` decimal digits of `value` into `out[at..at + width]`,
/// zero-padded. Panics if the range is outside `out` (callers write fixed templates).
pub fn put_digits(out: &mut [u8], at: usize, width: usize, mut value: u64) {
    for byte in out[at..at + width].iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_days_have_their_dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(-1), (1969, 12, 31));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(11_017), (2000, 3, 1));
        assert_eq!(civil_date(-719_468), (0, 3, 1));
        assert_eq!(civil_date(2_932_896), (9999, 12, 31));
    }

    #[test]
    fn consecutive_days_step_through_every_date() {
        let mut previous = civil_date(-800_000);
        for days in -799_999..3_000_000 {
            let (year, month, day) = civil_date(days);
            let (py, pm, pd) = previous;
            let next_day = year == py && month == pm && day == pd + 1;
            let next_month = year == py && month == pm + 1 && day == 1 && pd >= 28;
            let next_year = year == py + 1 && month == 1 && day == 1 && pm == 12 && pd == 31;
            assert!(
                next_day || next_month || next_year,
                "{previous:?} -> {:?}",
                (year, month, day)
            );
            previous = (year, month, day);
        }
    }

    #[test]
    fn digits_are_zero_padded_and_cut_to_width() {
        let mut out = *b"xxxxxxxx";
        put_digits(&mut out, 1, 4, 42);
        put_digits(&mut out, 5, 2, 12_345);
        assert_eq!(&out, b"x004245x");
    }
}
