//! Where values come from: the lookup function, `NAME_FILE` indirection and env files.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use super::duration::{BareUnit, format_duration, parse_duration};

/// Reads variables through a lookup function, collecting every problem instead of stopping at
/// the first, so that an operator sees the whole list in one go.
pub(crate) struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    cache: HashMap<String, Option<String>>,
    failed: HashSet<String>,
    pub(crate) errors: Vec<String>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { lookup, cache: HashMap::new(), failed: HashSet::new(), errors: Vec::new() }
    }

    pub(crate) fn error(&mut self, name: &str, message: impl std::fmt::Display) {
        self.failed.insert(name.to_string());
        self.errors.push(format!("{name}: {message}"));
    }

    /// True when reading `name` already produced an error, so later checks ("required in
    /// production") do not report the same variable twice.
    pub(crate) fn failed(&self, name: &str) -> bool {
        self.failed.contains(name)
    }

    fn lookup_non_empty(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.is_empty())
    }

    /// Whether `name` or `name_FILE` is set, without reading the file.
    pub(crate) fn is_set(&self, name: &str) -> bool {
        self.lookup_non_empty(name).is_some() || self.lookup_non_empty(&format!("{name}_FILE")).is_some()
    }

    /// The value of `name`, or the content of the file `name_FILE` names (one trailing newline
    /// removed, since editors and `echo` add one). Empty counts as unset.
    pub(crate) fn raw(&mut self, name: &str) -> Option<String> {
        if let Some(cached) = self.cache.get(name) {
            return cached.clone();
        }
        let value = self.read_uncached(name);
        self.cache.insert(name.to_string(), value.clone());
        value
    }

    fn read_uncached(&mut self, name: &str) -> Option<String> {
        let file_var = format!("{name}_FILE");
        match (self.lookup_non_empty(name), self.lookup_non_empty(&file_var)) {
            (Some(_), Some(_)) => {
                self.error(name, format_args!("both {name} and {file_var} are set; set only one"));
                None
            }
            (Some(value), None) => Some(value),
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(mut content) => {
                    if content.ends_with('\n') {
                        content.pop();
                        if content.ends_with('\r') {
                            content.pop();
                        }
                    }
                    Some(content).filter(|c| !c.is_empty())
                }
                Err(err) => {
                    self.failed.insert(name.to_string());
                    self.errors.push(format!("{file_var}: cannot read {path}: {err}"));
                    None
                }
            },
            (None, None) => None,
        }
    }

    /// A plain text value with surrounding whitespace removed.
    pub(crate) fn string(&mut self, name: &str) -> Option<String> {
        self.raw(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    /// Parses a non-secret value; `parse` gets the trimmed text and returns a message that the
    /// caller prefixes with the variable name. On error the default stands in, so that the
    /// remaining checks still run.
    pub(crate) fn parse<T>(&mut self, name: &str, default: T, parse: impl FnOnce(&str) -> Result<T, String>) -> T {
        self.parse_opt(name, parse).unwrap_or(default)
    }

    pub(crate) fn parse_opt<T>(&mut self, name: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let value = self.string(name)?;
        match parse(&value) {
            Ok(parsed) => Some(parsed),
            Err(message) => {
                self.error(name, message);
                None
            }
        }
    }

    pub(crate) fn bool(&mut self, name: &str, default: bool) -> bool {
        self.parse(name, default, parse_bool)
    }

    pub(crate) fn number(&mut self, name: &str, default: u32, range: std::ops::RangeInclusive<u32>) -> u32 {
        self.parse(name, default, |v| {
            v.parse::<u32>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| format!("{v:?} is not a number from {} to {}", range.start(), range.end()))
        })
    }

    pub(crate) fn port(&mut self, name: &str, default: u16) -> u16 {
        self.parse(name, default, parse_port)
    }

    /// A duration that must be positive: a zero lifetime or window is always a mistake.
    pub(crate) fn duration(&mut self, name: &str, bare: BareUnit, default: Duration) -> Duration {
        self.duration_opt(name, bare).unwrap_or(default)
    }

    pub(crate) fn duration_opt(&mut self, name: &str, bare: BareUnit) -> Option<Duration> {
        self.parse_opt(name, |v| {
            let d = parse_duration(v, bare)?;
            if d.is_zero() { Err(format!("{v:?} must be longer than zero")) } else { Ok(d) }
        })
    }

    /// A lifetime with two names (`ACCESS_TOKEN_EXPIRY` and the guide's `ACCESS_TOKEN_MAX_AGE`):
    /// either may be set, and both only when they agree.
    pub(crate) fn duration_with_alias(
        &mut self,
        name: &str,
        alias: &str,
        bare: BareUnit,
        default: Duration,
    ) -> Duration {
        let primary = self.duration_opt(name, bare);
        let secondary = self.duration_opt(alias, BareUnit::Seconds);
        match (primary, secondary) {
            (Some(a), Some(b)) if a != b => {
                self.error(
                    name,
                    format_args!(
                        "{} disagrees with {alias} ({}); set only one, or both to the same value",
                        format_duration(a),
                        format_duration(b)
                    ),
                );
                a
            }
            (Some(a), _) => a,
            (None, Some(b)) => b,
            (None, None) => default,
        }
    }
}

/// Booleans as people write them in env files.
pub(crate) fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{value:?} is not a boolean (true/false, 1/0, yes/no, on/off)")),
    }
}

pub(crate) fn parse_port(value: &str) -> Result<u16, String> {
    value.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("{value:?} is not a port number (1-65535)"))
}

/// Reads `KEY=VALUE` pairs from an env file without touching the process environment. A key
/// given twice takes its last value, as in the Node.js service this replaces. Errors name the
/// file and line, never the content (it may hold a secret).
pub fn read_env_file(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut vars = HashMap::new();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        match item {
            Ok((key, value)) => {
                vars.insert(key, value);
            }
            Err(dotenvy::Error::LineParse(fragment, _)) => {
                // The fragment may hold a secret, so only its line number is shown.
                let line = text
                    .find(&fragment)
                    .map(|at| format!("line {}", text[..at].matches('\n').count() + 1))
                    .unwrap_or_else(|| "a line".to_string());
                return Err(format!(
                    "{}: {line} is not KEY=VALUE (check for an unclosed quote or an unknown escape such as \\t)",
                    path.display()
                ));
            }
            Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
        }
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader_over(map: &HashMap<&str, String>, f: impl FnOnce(&mut Reader<'_>)) {
        let lookup = |k: &str| map.get(k).cloned();
        let mut reader = Reader::new(&lookup);
        f(&mut reader);
    }

    #[test]
    fn booleans() {
        for (input, expected) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("yes", true),
            ("On", true),
            ("false", false),
            ("0", false),
            ("No", false),
            ("off", false),
        ] {
            assert_eq!(parse_bool(input), Ok(expected), "{input}");
        }
        for input in ["", "2", "y", "enabled", "truee"] {
            assert!(parse_bool(input).is_err(), "{input}");
        }
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("3001"), Ok(3001));
        assert_eq!(parse_port("65535"), Ok(65535));
        for input in ["0", "65536", "abc", "-1", "30.1"] {
            let err = parse_port(input).expect_err(input);
            assert!(err.contains("is not a port number (1-65535)"), "{err}");
        }
    }

    #[test]
    fn empty_counts_as_unset() {
        let map = HashMap::from([("PORT", String::new()), ("SMTP_HOST", "  ".to_string())]);
        reader_over(&map, |r| {
            assert_eq!(r.port("PORT", 3001), 3001);
            assert_eq!(r.string("SMTP_HOST"), None);
            assert!(!r.is_set("PORT"));
            assert!(r.errors.is_empty());
        });
    }

    #[test]
    fn a_bad_value_is_reported_once_even_when_read_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let map = HashMap::from([("ADMIN_TOKEN_FILE", missing.display().to_string())]);
        reader_over(&map, |r| {
            assert_eq!(r.raw("ADMIN_TOKEN"), None);
            assert_eq!(r.raw("ADMIN_TOKEN"), None);
            assert_eq!(r.errors.len(), 1);
            assert!(r.failed("ADMIN_TOKEN"));
        });
    }

    #[test]
    fn env_file_pairs_without_touching_the_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("truxe.env");
        std::fs::write(
            &path,
            "\u{feff}# comment\nexport PORT=4000\nEMAIL_FROM_NAME=\"Your App Name\"\nPORT=4001\nKEY='a\\nb'\n",
        )
        .expect("write");
        let vars = read_env_file(&path).expect("parses");
        assert_eq!(vars.get("PORT").map(String::as_str), Some("4001"));
        assert_eq!(vars.get("EMAIL_FROM_NAME").map(String::as_str), Some("Your App Name"));
        assert_eq!(vars.get("KEY").map(String::as_str), Some("a\\nb"));
        assert!(std::env::var_os("EMAIL_FROM_NAME").is_none());
    }

    #[test]
    fn malformed_env_file_names_the_file_and_line_but_not_the_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.env");
        std::fs::write(&path, "PORT=4000\n\nSESSION_SECRET=\"hunter2-unclosed\nLOG_LEVEL=info\n").expect("write");
        let err = read_env_file(&path).expect_err("malformed");
        assert!(err.contains("bad.env"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");

        std::fs::write(&path, "A=1\nNAME=two words\n").expect("write");
        let err = read_env_file(&path).expect_err("malformed");
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("words"), "{err}");
    }
}
