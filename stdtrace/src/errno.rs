//! Linux errno names, for `--errno` and for reports.

/// `(number, name)` for every errno Linux defines on x86_64, in order.
const ERRNOS: &[(u32, &str)] = &[
    (1, "EPERM"),
    (2, "ENOENT"),
    (3, "ESRCH"),
    (4, "EINTR"),
    (5, "EIO"),
    (6, "ENXIO"),
    (7, "E2BIG"),
    (8, "ENOEXEC"),
    (9, "EBADF"),
    (10, "ECHILD"),
    (11, "EAGAIN"),
    (12, "ENOMEM"),
    (13, "EACCES"),
    (14, "EFAULT"),
    (15, "ENOTBLK"),
    (16, "EBUSY"),
    (17, "EEXIST"),
    (18, "EXDEV"),
    (19, "ENODEV"),
    (20, "ENOTDIR"),
    (21, "EISDIR"),
    (22, "EINVAL"),
    (23, "ENFILE"),
    (24, "EMFILE"),
    (25, "ENOTTY"),
    (26, "ETXTBSY"),
    (27, "EFBIG"),
    (28, "ENOSPC"),
    (29, "ESPIPE"),
    (30, "EROFS"),
    (31, "EMLINK"),
    (32, "EPIPE"),
    (33, "EDOM"),
    (34, "ERANGE"),
    (35, "EDEADLK"),
    (36, "ENAMETOOLONG"),
    (37, "ENOLCK"),
    (38, "ENOSYS"),
    (39, "ENOTEMPTY"),
    (40, "ELOOP"),
    (42, "ENOMSG"),
    (43, "EIDRM"),
    (44, "ECHRNG"),
    (45, "EL2NSYNC"),
    (46, "EL3HLT"),
    (47, "EL3RST"),
    (48, "ELNRNG"),
    (49, "EUNATCH"),
    (50, "ENOCSI"),
    (51, "EL2HLT"),
    (52, "EBADE"),
    (53, "EBADR"),
    (54, "EXFULL"),
    (55, "ENOANO"),
    (56, "EBADRQC"),
    (57, "EBADSLT"),
    (59, "EBFONT"),
    (60, "ENOSTR"),
    (61, "ENODATA"),
    (62, "ETIME"),
    (63, "ENOSR"),
    (64, "ENONET"),
    (65, "ENOPKG"),
    (66, "EREMOTE"),
    (67, "ENOLINK"),
    (68, "EADV"),
    (69, "ESRMNT"),
    (70, "ECOMM"),
    (71, "EPROTO"),
    (72, "EMULTIHOP"),
    (73, "EDOTDOT"),
    (74, "EBADMSG"),
    (75, "EOVERFLOW"),
    (76, "ENOTUNIQ"),
    (77, "EBADFD"),
    (78, "EREMCHG"),
    (79, "ELIBACC"),
    (80, "ELIBBAD"),
    (81, "ELIBSCN"),
    (82, "ELIBMAX"),
    (83, "ELIBEXEC"),
    (84, "EILSEQ"),
    (85, "ERESTART"),
    (86, "ESTRPIPE"),
    (87, "EUSERS"),
    (88, "ENOTSOCK"),
    (89, "EDESTADDRREQ"),
    (90, "EMSGSIZE"),
    (91, "EPROTOTYPE"),
    (92, "ENOPROTOOPT"),
    (93, "EPROTONOSUPPORT"),
    (94, "ESOCKTNOSUPPORT"),
    (95, "EOPNOTSUPP"),
    (96, "EPFNOSUPPORT"),
    (97, "EAFNOSUPPORT"),
    (98, "EADDRINUSE"),
    (99, "EADDRNOTAVAIL"),
    (100, "ENETDOWN"),
    (101, "ENETUNREACH"),
    (102, "ENETRESET"),
    (103, "ECONNABORTED"),
    (104, "ECONNRESET"),
    (105, "ENOBUFS"),
    (106, "EISCONN"),
    (107, "ENOTCONN"),
    (108, "ESHUTDOWN"),
    (109, "ETOOMANYREFS"),
    (110, "ETIMEDOUT"),
    (111, "ECONNREFUSED"),
    (112, "EHOSTDOWN"),
    (113, "EHOSTUNREACH"),
    (114, "EALREADY"),
    (115, "EINPROGRESS"),
    (116, "ESTALE"),
    (117, "EUCLEAN"),
    (118, "ENOTNAM"),
    (119, "ENAVAIL"),
    (120, "EISNAM"),
    (121, "EREMOTEIO"),
    (122, "EDQUOT"),
    (123, "ENOMEDIUM"),
    (124, "EMEDIUMTYPE"),
    (125, "ECANCELED"),
    (126, "ENOKEY"),
    (127, "EKEYEXPIRED"),
    (128, "EKEYREVOKED"),
    (129, "EKEYREJECTED"),
    (130, "EOWNERDEAD"),
    (131, "ENOTRECOVERABLE"),
    (132, "ERFKILL"),
    (133, "EHWPOISON"),
];

/// Aliases Linux accepts for the same numbers.
const ALIASES: &[(&str, u32)] = &[("EWOULDBLOCK", 11), ("EDEADLOCK", 35), ("ENOTSUP", 95)];

/// An errno as reports carry it: the number, serialized as its name (`"EPIPE"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Errno(pub u32);

impl Errno {
    pub const EAGAIN: Errno = Errno(11);
    pub const EPIPE: Errno = Errno(32);

    /// `"EPIPE"`, or `"E<number>"` for one Linux does not name.
    pub fn name(self) -> String {
        name(self.0)
    }

    /// What it means, as the C library says it (`"Broken pipe"`).
    pub fn describe(self) -> String {
        let text = std::io::Error::from_raw_os_error(self.0 as i32).to_string();
        match text.find(" (os error") {
            Some(end) => text[..end].to_owned(),
            None => text,
        }
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl serde::Serialize for Errno {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Errno {
    /// From its name as serialized (`"EPIPE"`, or `"E250"` for one Linux does not name).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        parse(&text)
            .or_else(|| text.strip_prefix('E').and_then(|n| n.parse().ok()))
            .map(Errno)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown errno `{text}`")))
    }
}

/// The name of an errno (`"EPIPE"`), or `"E<number>"` for one Linux does not name.
pub fn name(errno: u32) -> String {
    ERRNOS
        .binary_search_by_key(&errno, |(number, _)| *number)
        .map(|index| ERRNOS[index].1.to_owned())
        .unwrap_or_else(|_| format!("E{errno}"))
}

/// The number of an errno given by name (any case, `EPIPE` or `epipe`) or as a number.
pub fn parse(text: &str) -> Option<u32> {
    let text = text.trim();
    if let Ok(number) = text.parse::<u32>() {
        return (number > 0 && number < stdtrace_common::MAX_ERRNO).then_some(number);
    }
    let upper = text.to_ascii_uppercase();
    ERRNOS
        .iter()
        .find(|(_, name)| *name == upper)
        .map(|(number, _)| *number)
        .or_else(|| {
            ALIASES
                .iter()
                .find(|(name, _)| *name == upper)
                .map(|(_, n)| *n)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        assert!(ERRNOS.windows(2).all(|pair| pair[0].0 < pair[1].0));
        for (number, name_) in ERRNOS {
            assert_eq!(parse(name_), Some(*number));
            assert_eq!(name(*number), *name_);
        }
        assert_eq!(parse("epipe"), Some(32));
        assert_eq!(parse("EWOULDBLOCK"), Some(11));
        assert_eq!(parse("28"), Some(28));
        assert_eq!(parse("0"), None);
        assert_eq!(parse("EBOGUS"), None);
        assert_eq!(parse("999"), None);
        assert_eq!(name(250), "E250");
    }
}
