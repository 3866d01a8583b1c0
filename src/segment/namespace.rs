//! Segment namespaces: a process tree's segments are named `pyconc-<namespace>-<128 random bits in hex>` when
//! the environment variable [`ENV`] is set (children inherit it), `pyconc-<hex>` otherwise. `ls`, `gc` and the
//! automatic reaping of dead segments look at the current namespace only, so a test suite (or any program)
//! can check and clean its own segments without touching another program's. Opening a segment by name works
//! across namespaces: a handle carries the full name.

use crate::{Error, Result};
use std::sync::OnceLock;

/// The environment variable naming the namespace.
pub const ENV: &str = "PYCONC_NAMESPACE";
/// Longest namespace: the dict header stores extension segment names in 48 bytes.
pub const MAX_LEN: usize = 8;
/// Prefix of every segment name (in `/dev/shm`).
pub const NAME_PREFIX: &str = "pyconc-";

static CURRENT: OnceLock<std::result::Result<String, String>> = OnceLock::new();

fn valid(ns: &str) -> bool {
    (1..=MAX_LEN).contains(&ns.len()) && ns.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_hex32(h: &str) -> bool {
    h.len() == 32 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// This process's namespace ("" for none), read from [`ENV`] once, at first use.
pub fn current() -> Result<&'static str> {
    let r = CURRENT.get_or_init(|| match std::env::var(ENV) {
        Err(_) => Ok(String::new()),
        Ok(ns) if ns.is_empty() => Ok(String::new()),
        Ok(ns) if valid(&ns) => Ok(ns),
        Ok(ns) => Err(format!(
            "{ENV}={ns:?} is not a valid pyconc namespace: use 1 to {MAX_LEN} ASCII letters, digits or '_'"
        )),
    });
    r.as_deref().map_err(|m| Error::Invalid(m.clone()))
}

/// Splits a segment name into (namespace, random hex); `None` if it is not a pyconc segment name.
pub fn split(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (ns, hex) = match rest.rsplit_once('-') {
        Some((ns, hex)) if valid(ns) => (ns, hex),
        Some(_) => return None,
        None => ("", rest),
    };
    is_hex32(hex).then_some((ns, hex))
}

/// The name of a new segment in the current namespace with the random part `hex`.
pub fn make_name(hex: &str) -> Result<String> {
    let ns = current()?;
    Ok(if ns.is_empty() { format!("{NAME_PREFIX}{hex}") } else { format!("{NAME_PREFIX}{ns}-{hex}") })
}

/// Whether `name` belongs to the current namespace (false if the namespace variable is invalid).
pub fn is_current(name: &str) -> bool {
    matches!((split(name), current()), (Some((ns, _)), Ok(cur)) if ns == cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_namespace_and_random_part() {
        let hex = "0123456789abcdef0123456789abcdef";
        assert_eq!(split(&format!("pyconc-{hex}")), Some(("", hex)));
        assert_eq!(split(&format!("pyconc-t_42-{hex}")), Some(("t_42", hex)));
        assert_eq!(split(&format!("pyconc-toolongname-{hex}")), None);
        assert_eq!(split(&format!("pyconc--{hex}")), None);
        assert_eq!(split(&format!("pyconc-a-b-{hex}")), None);
        assert_eq!(split("pyconc-xyz"), None);
        assert_eq!(split(&format!("other-{hex}")), None);
        assert!(make_name(hex).unwrap().len() < 48, "fits the dict header's name slots");
    }
}
