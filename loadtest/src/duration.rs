//! Durations on the command line (`10s`, `500ms`, `1.5s`, `250us`, `2m`) and
//! in reports.

use std::time::Duration;

/// Parses `500ms`, `1.5s`, `250us`, `2m`: a number, then a unit (`us`, `ms`,
/// `s` or `m`). A number without a unit is refused: `10` could mean anything.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| format!("duration {s:?} needs a unit (us, ms, s or m)"))?;
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("duration {s:?} does not start with a number"))?;
    let unit_secs = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        _ => {
            return Err(format!(
                "duration {s:?} has unknown unit {unit:?} (us, ms, s or m)"
            ))
        }
    };
    Duration::try_from_secs_f64(number * unit_secs)
        .map_err(|_| format!("duration {s:?} is negative or too large"))
}

/// Milliseconds as a short readable figure: `0.412`, `3.05`, `41.2`, `1234`.
pub fn format_ms(ms: f64) -> String {
    if !ms.is_finite() {
        return "-".into();
    }
    if ms < 1.0 {
        format!("{ms:.3}")
    } else if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in ["10", "ms", "5h", "-1s", "x5ms", "", "1e999s"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_milliseconds() {
        assert_eq!(format_ms(0.4123), "0.412");
        assert_eq!(format_ms(3.054), "3.05");
        assert_eq!(format_ms(41.23), "41.2");
        assert_eq!(format_ms(1234.4), "1234");
        assert_eq!(format_ms(f64::NAN), "-");
    }
}
