//! Go release versions as the toolchain writes them into binaries (`go1.21.13`, `go1.22rc1`,
//! `devel go1.24-3b5e...`).

use std::fmt;

/// A Go version: what the binary says, and the release numbers read from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoVersion {
    /// Exactly as found, e.g. `go1.25.5`.
    pub raw: String,
    /// `1` for every Go so far.
    pub major: u32,
    /// `25` in `go1.25.5`.
    pub minor: u32,
    /// `5` in `go1.25.5`; `None` for a `.0` release written as `go1.21`, a release candidate
    /// or a development build.
    pub patch: Option<u32>,
}

impl GoVersion {
    /// Reads `go1.N[.P][suffix]`, also inside `devel go1.N-...` strings; `None` if there is
    /// no such version in `raw`.
    pub fn parse(raw: &str) -> Option<GoVersion> {
        let start = raw.find("go1.")?;
        let numbers = &raw[start + 2..];
        let (major, rest) = leading_number(numbers)?;
        let rest = rest.strip_prefix('.')?;
        let (minor, rest) = leading_number(rest)?;
        let patch = rest
            .strip_prefix('.')
            .and_then(leading_number)
            .map(|(patch, _)| patch);
        Some(GoVersion {
            raw: raw.to_owned(),
            major,
            minor,
            patch,
        })
    }

    /// `(major, minor)`, the part that decides runtime layouts.
    pub fn minor_release(&self) -> (u32, u32) {
        (self.major, self.minor)
    }

    /// Whether this is Go `major.minor` or later.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        self.minor_release() >= (major, minor)
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn leading_number(text: &str) -> Option<(u32, &str)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number = text[..digits].parse().ok()?;
    Some((number, &text[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_releases_candidates_and_devel_builds() {
        let v = GoVersion::parse("go1.25.5").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 25, Some(5)));
        let v = GoVersion::parse("go1.21rc2").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 21, None));
        let v = GoVersion::parse("go1.22.0-bigcorp X:boringcrypto").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 22, Some(0)));
        let v = GoVersion::parse("devel go1.24-3b5e0c9 Tue Jan 1").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 24, None));
        assert!(v.at_least(1, 24) && !v.at_least(1, 25));
        assert_eq!(GoVersion::parse("gcc 12"), None);
        assert_eq!(GoVersion::parse("go1."), None);
        assert_eq!(GoVersion::parse("go1.99999999999999999999"), None);
    }
}
