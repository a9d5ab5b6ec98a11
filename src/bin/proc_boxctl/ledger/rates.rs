//! The rate card and exact money.
//!
//! Prices are read as exact decimals (a TOML number is taken as the shortest decimal that
//! reads back as the same number, i.e. as written; a string such as `"0.031"` works too) and
//! kept as integer billionths. A job's cost is computed in integer picos (10⁻¹² of the
//! currency), each charge rounded half-to-even there; the job's total is multiplied by its
//! host's multiplier, rounded half-to-even to the currency's minor unit (the cent), and raised
//! to the minimum. A bill is the sum of its jobs' rounded costs. No float is involved, so the
//! same rows and the same card always give the same bill, to the cent.

use super::store::Job;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Billionths of the currency.
type Nanos = i128;

const NANO: i128 = 1_000_000_000;
const GIB: i128 = 1 << 30;

/// The prices in force from a day on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prices {
    pub cpu_hour: Nanos,
    pub gib_hour: Nanos,
    pub job: Nanos,
    pub minimum: Nanos,
}

#[derive(Clone, Debug)]
pub struct Multiplier {
    pub pattern: String,
    pub factor: Nanos,
}

#[derive(Clone, Debug)]
pub struct RateCard {
    pub currency: String,
    /// Digits of the minor unit (2: cents).
    pub decimals: u32,
    /// `(from, prices)`, `from` in microseconds since the epoch, oldest first; the first is
    /// from the beginning of time.
    pub periods: Vec<(i64, Prices)>,
    pub multipliers: Vec<Multiplier>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CardFile {
    currency: String,
    #[serde(default = "two")]
    decimals: u32,
    cpu_hour: Num,
    gib_hour: Num,
    #[serde(default)]
    job: Option<Num>,
    #[serde(default)]
    minimum: Option<Num>,
    #[serde(default)]
    host: Vec<HostFile>,
    #[serde(default)]
    change: Vec<ChangeFile>,
}

/// A number in the card, with where it was written: a float is read from its own text, so
/// that a price of more digits than a float holds is still exact.
type Num = toml::Spanned<toml::Value>;

fn two() -> u32 {
    2
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostFile {
    pattern: String,
    multiplier: Num,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeFile {
    from: toml::Value,
    cpu_hour: Option<Num>,
    gib_hour: Option<Num>,
    job: Option<Num>,
    minimum: Option<Num>,
}

/// A decimal written as text, exactly, in billionths: `0.031` → 31_000_000.
pub fn parse_decimal(s: &str) -> Result<Nanos, String> {
    let t = s.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("'{s}' is not a decimal number"));
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 9 {
        return Err(format!("'{s}' has more than 9 decimal places"));
    }
    let int: i128 =
        if int.is_empty() { 0 } else { int.parse().map_err(|_| format!("'{s}' is too large"))? };
    let frac_n: i128 =
        if frac.is_empty() { 0 } else { frac.parse().unwrap_or(0) * 10i128.pow(9 - frac.len() as u32) };
    let v =
        int.checked_mul(NANO).and_then(|v| v.checked_add(frac_n)).filter(|v| *v < NANO * 1_000_000_000_000);
    let v = v.ok_or_else(|| format!("'{s}' is too large"))?;
    Ok(if neg { -v } else { v })
}

/// A TOML price: an integer, a float read as the decimal it was written as (its own text in
/// `card`), or a string.
fn price(v: &Num, card: &str, what: &str) -> Result<Nanos, String> {
    let n = match v.get_ref() {
        toml::Value::Integer(i) => parse_decimal(&i.to_string()),
        toml::Value::Float(f) if f.is_finite() => {
            // The text as written (`1_000.000_000_001`), else, for an exponent form, the
            // shortest decimal that reads back as the same float.
            let written = card.get(v.span()).map(|t| t.replace('_', ""));
            written
                .map_or_else(|| parse_decimal(&format!("{f}")), |t| parse_decimal(&t))
                .or_else(|_| parse_decimal(&format!("{f}")))
        }
        toml::Value::String(s) => parse_decimal(s),
        _ => Err("not a number".into()),
    }
    .map_err(|e| format!("{what}: {e}"))?;
    if n < 0 {
        return Err(format!("{what}: negative"));
    }
    Ok(n)
}

/// A day (`2027-01-01`) or an RFC 3339 time, to microseconds since the epoch.
fn from_time(v: &toml::Value) -> Result<i64, String> {
    let s = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(d) => d.to_string(),
        _ => return Err("'from' must be a date such as 2027-01-01".into()),
    };
    if let Some(days) = super::report::parse_day(&s) {
        return Ok(days * 86_400_000_000);
    }
    super::ingest::parse_time_us(&s)
        .ok_or_else(|| format!("'from = {s}': not a date (2027-01-01) or an RFC 3339 time"))
}

impl RateCard {
    pub fn load(path: &std::path::Path) -> Result<RateCard, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        RateCard::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<RateCard, String> {
        let f: CardFile = toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())?;
        if f.currency.trim().is_empty() {
            return Err("'currency' is empty".into());
        }
        if f.decimals > 9 {
            return Err("'decimals' is at most 9".into());
        }
        let zero = Num::new(0..0, toml::Value::Integer(0));
        let base = Prices {
            cpu_hour: price(&f.cpu_hour, text, "cpu_hour")?,
            gib_hour: price(&f.gib_hour, text, "gib_hour")?,
            job: price(f.job.as_ref().unwrap_or(&zero), text, "job")?,
            minimum: price(f.minimum.as_ref().unwrap_or(&zero), text, "minimum")?,
        };
        let mut changes = BTreeMap::new();
        for c in &f.change {
            let from = from_time(&c.from)?;
            if changes.insert(from, c).is_some() {
                return Err(format!("two [[change]] tables take effect at the same time ({:?})", c.from));
            }
        }
        let mut periods = vec![(i64::MIN, base)];
        for (from, c) in changes {
            let mut p = periods.last().map(|(_, p)| p.clone()).unwrap_or_default();
            let set = |slot: &mut Nanos, v: &Option<Num>, what| -> Result<(), String> {
                if let Some(v) = v {
                    *slot = price(v, text, what)?;
                }
                Ok(())
            };
            set(&mut p.cpu_hour, &c.cpu_hour, "cpu_hour")?;
            set(&mut p.gib_hour, &c.gib_hour, "gib_hour")?;
            set(&mut p.job, &c.job, "job")?;
            set(&mut p.minimum, &c.minimum, "minimum")?;
            periods.push((from, p));
        }
        let multipliers = f
            .host
            .iter()
            .map(|h| {
                Ok(Multiplier {
                    pattern: h.pattern.clone(),
                    factor: price(&h.multiplier, text, "multiplier")?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(RateCard { currency: f.currency.trim().to_owned(), decimals: f.decimals, periods, multipliers })
    }

    /// The prices in force when a job ended.
    fn prices(&self, ended_us: i64) -> &Prices {
        let i = self.periods.partition_point(|(from, _)| *from <= ended_us);
        &self.periods[i.saturating_sub(1)].1
    }

    /// The host's multiplier in billionths: the first pattern that matches, else 1.
    fn factor(&self, host: &str) -> Nanos {
        self.multipliers.iter().find(|m| glob(&m.pattern, host)).map_or(NANO, |m| m.factor)
    }

    /// The job's cost in minor units (cents), rounded as the module says.
    pub fn cost(&self, j: &Job) -> Result<i128, String> {
        let p = self.prices(j.ended_us);
        let too_large = || format!("the cost of job {} is too large to compute", j.message_id);
        let cpu_us = i128::from(j.cpu_user_us) + i128::from(j.cpu_sys_us);
        // nanos per hour × µs / 3.6e9 µs per hour × 1000 picos per nano
        let cpu = div_even(p.cpu_hour.checked_mul(cpu_us).ok_or_else(too_large)?, 3_600_000);
        let gib_us = i128::from(j.peak_pss_bytes).checked_mul(i128::from(j.wall_us)).ok_or_else(too_large)?;
        let gib = div_even(p.gib_hour.checked_mul(gib_us).ok_or_else(too_large)?, GIB * 3_600_000);
        let fee = p.job * 1000;
        let picos = cpu.checked_add(gib).and_then(|s| s.checked_add(fee)).ok_or_else(too_large)?;
        let picos = div_even(picos.checked_mul(self.factor(&j.host)).ok_or_else(too_large)?, NANO);
        let unit = 10i128.pow(12 - self.decimals);
        // The least a job costs, in minor units: a minimum finer than the currency's unit is
        // rounded up, so that no job is ever billed below it.
        let minimum = (p.minimum * 1000 + unit - 1).div_euclid(unit);
        Ok(div_even(picos, unit).max(minimum))
    }

    /// Minor units as a decimal: 1234 → "12.34".
    pub fn format(&self, units: i128) -> String {
        format_units(units, self.decimals)
    }
}

pub fn format_units(units: i128, decimals: u32) -> String {
    if decimals == 0 {
        return units.to_string();
    }
    let scale = 10i128.pow(decimals);
    let sign = if units < 0 { "-" } else { "" };
    let a = units.unsigned_abs();
    format!("{sign}{}.{:0width$}", a / scale as u128, a % scale as u128, width = decimals as usize)
}

/// `n / d` rounded half to even (`d > 0`).
pub fn div_even(n: i128, d: i128) -> i128 {
    let (q, r) = (n.div_euclid(d), n.rem_euclid(d));
    match (2 * r).cmp(&d) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q & 1),
    }
}

/// Shell-style `*` and `?` over the host name.
pub fn glob(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(cpu_s: i64, pss: i64, wall_s: i64, host: &str, ended_us: i64) -> Job {
        Job {
            cpu_user_us: cpu_s * 1_000_000,
            peak_pss_bytes: pss,
            wall_us: wall_s * 1_000_000,
            host: host.into(),
            ended_us,
            ..Job::default()
        }
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(parse_decimal("0.031").unwrap(), 31_000_000);
        assert_eq!(parse_decimal("12").unwrap(), 12 * NANO);
        assert_eq!(parse_decimal(".5").unwrap(), NANO / 2);
        assert!(parse_decimal("0.0000000001").is_err());
        assert!(parse_decimal("1e3").is_err());
        assert_eq!(div_even(5, 2), 2);
        assert_eq!(div_even(7, 2), 4);
        assert_eq!(div_even(-5, 2), -2);
        assert_eq!(format_units(1234, 2), "12.34");
        assert_eq!(format_units(5, 2), "0.05");
        assert!(glob("gpu*", "gpu07") && glob("n?de*", "node1") && !glob("gpu*", "cpu1") && glob("*", ""));
    }

    #[test]
    fn a_cost_that_floats_get_wrong() {
        // 1.015 per CPU hour for one hour: exactly 1.015, half to even → 1.02; as floats,
        // 1.015 is 1.01499999…, which rounds to 1.01.
        let card = RateCard::parse("currency = \"EUR\"\ncpu_hour = 1.015\ngib_hour = 0\n").unwrap();
        assert_eq!(card.format(card.cost(&job(3600, 0, 0, "h", 0)).unwrap()), "1.02");
        assert_eq!(format!("{:.2}", 1.015f64 * 1.0), "1.01");
    }

    /// 123456789.123456789 has 18 significant digits: as a float it reads 123456789.12345679.
    /// The card's own text is read instead, so the price is exact with or without quotes.
    #[test]
    fn a_price_of_more_digits_than_a_float_holds_is_exact() {
        for written in ["123456789.123456789", "123_456_789.123_456_789", "\"123456789.123456789\""] {
            let card = RateCard::parse(&format!(
                "currency = \"EUR\"\ndecimals = 9\ncpu_hour = {written}\ngib_hour = 0\n"
            ))
            .unwrap();
            assert_eq!(card.periods[0].1.cpu_hour, 123_456_789_123_456_789, "{written}");
            assert_eq!(card.format(card.cost(&job(3600, 0, 0, "h", 0)).unwrap()), "123456789.123456789");
        }
        // An exponent form is read as the float it is.
        let card = RateCard::parse("currency = \"EUR\"\ncpu_hour = 1.5e-3\ngib_hour = 0\n").unwrap();
        assert_eq!(card.periods[0].1.cpu_hour, 1_500_000);
        assert_eq!(format!("{}", "123456789.123456789".parse::<f64>().unwrap()), "123456789.12345679");
    }

    #[test]
    fn cards_price_by_date_host_and_minimum() {
        let card = RateCard::parse(
            r#"currency = "EUR"
cpu_hour = 0.031
gib_hour = 0.004
job = 0.001
minimum = 0.01
[[host]]
pattern = "gpu*"
multiplier = 2.5
[[change]]
from = "2027-01-01"
cpu_hour = "0.5"
"#,
        )
        .unwrap();
        let jan = super::super::report::parse_day("2027-01-01").unwrap() * 86_400_000_000;
        // 100 h of CPU at 0.031 = 3.1, 1 GiB for 10 h at 0.004 = 0.04, + 0.001 → 3.141 → 3.14
        let j = job(360_000, GIB as i64, 36_000, "n1", jan - 1);
        assert_eq!(card.format(card.cost(&j).unwrap()), "3.14");
        // × 2.5 = 7.8525 → 7.85
        assert_eq!(card.format(card.cost(&Job { host: "gpu1".into(), ..j.clone() }).unwrap()), "7.85");
        // from January: 100 h × 0.5 = 50 + 0.041
        assert_eq!(card.format(card.cost(&Job { ended_us: jan, ..j.clone() }).unwrap()), "50.04");
        // the minimum
        assert_eq!(card.format(card.cost(&job(1, 0, 1, "n1", 0)).unwrap()), "0.01");
        assert!(RateCard::parse("currency = \"EUR\"\ncpu_hour = 1\ngib_hour = 0\nbogus = 1\n").is_err());
        assert!(RateCard::parse("currency = \"EUR\"\ncpu_hour = -1\ngib_hour = 0\n").is_err());
    }

    #[test]
    fn a_minimum_finer_than_the_unit_is_rounded_up() {
        let card =
            RateCard::parse("currency = \"EUR\"\ncpu_hour = 0\ngib_hour = 0\njob = 0\nminimum = 0.005\n")
                .unwrap();
        assert_eq!(card.format(card.cost(&job(1, 0, 0, "h", 0)).unwrap()), "0.01");
    }
}
