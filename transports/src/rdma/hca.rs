//! `FERROCOLL_IB_HCA`: which RDMA devices, ports and GID indices to use, in the syntax of
//! NCCL's `NCCL_IB_HCA`, with an optional GID index per entry.
//!
//! The value is a comma-separated list of `name[:port[:gid_index]]`:
//! - `mlx5_0:1,mlx5_1` — those devices (port 1 of the first; the first active port of the
//!   second). A name matches every device it is a prefix of (`mlx5` matches `mlx5_0`…),
//!   as in NCCL.
//! - `=mlx5_0` — exact names only (the `=` applies to the whole list).
//! - `^mlx5_1` — every device except these (the `^` applies to the whole list).
//! - `mlx5_0:1:3` — GID index 3 on that port (RoCE v2 usually needs one; the default is 0).
//!
//! Unset or empty: every device, first active port, GID index 0.

/// One entry of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HcaEntry {
    /// Device name, or its prefix.
    pub name: String,
    /// The port (1-based), or `None` for the first active one.
    pub port: Option<u8>,
    /// The GID index, or `None` for 0.
    pub gid_index: Option<u8>,
}

/// A parsed `FERROCOLL_IB_HCA`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HcaFilter {
    /// The entries; empty: every device.
    pub entries: Vec<HcaEntry>,
    /// `=`: names must match exactly.
    pub exact: bool,
    /// `^`: the entries are excluded instead of selected.
    pub exclude: bool,
}

impl HcaFilter {
    /// Parses the variable's value; the error says what is wrong in words.
    pub fn parse(value: &str) -> Result<HcaFilter, String> {
        let mut v = value.trim();
        let mut f = HcaFilter::default();
        if let Some(rest) = v.strip_prefix('^') {
            f.exclude = true;
            v = rest;
        }
        if let Some(rest) = v.strip_prefix('=') {
            f.exact = true;
            v = rest;
        }
        if v.is_empty() {
            return if f.exclude || f.exact {
                Err(format!("{value:?} names no device"))
            } else {
                Ok(f)
            };
        }
        for item in v.split(',') {
            let mut parts = item.trim().split(':');
            let name = parts.next().unwrap_or("").trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            {
                return Err(format!("{item:?} is not a device name"));
            }
            let num = |what: &str, s: Option<&str>| -> Result<Option<u8>, String> {
                match s {
                    None => Ok(None),
                    Some(t) => t
                        .trim()
                        .parse::<u8>()
                        .map(Some)
                        .map_err(|_| format!("{item:?}: {what} {t:?} is not a number 0-255")),
                }
            };
            let port = num("port", parts.next())?;
            if port == Some(0) {
                return Err(format!("{item:?}: ports count from 1"));
            }
            let gid_index = num("GID index", parts.next())?;
            if parts.next().is_some() {
                return Err(format!("{item:?}: expected name[:port[:gid_index]]"));
            }
            f.entries.push(HcaEntry {
                name: name.to_string(),
                port,
                gid_index,
            });
        }
        Ok(f)
    }

    /// The entry that selects device `name` (`Some(None)`: selected with no entry of its
    /// own, e.g. no list or an exclusion list that spares it), or `None` when filtered out.
    pub fn select(&self, name: &str) -> Option<Option<&HcaEntry>> {
        if self.entries.is_empty() {
            return Some(None);
        }
        let matches = |e: &&HcaEntry| {
            if self.exact {
                e.name == name
            } else {
                name.starts_with(&e.name)
            }
        };
        let hit = self.entries.iter().find(matches);
        match (self.exclude, hit) {
            (false, Some(e)) => Some(Some(e)),
            (false, None) => None,
            (true, Some(_)) => None,
            (true, None) => Some(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nccl_syntax_selects_devices_ports_and_gids() {
        let f = HcaFilter::parse("mlx5_0:1,mlx5_1").unwrap();
        assert_eq!(f.select("mlx5_0").unwrap().unwrap().port, Some(1));
        assert_eq!(f.select("mlx5_1").unwrap().unwrap().port, None);
        assert!(f.select("mlx4_0").is_none());
        let prefix = HcaFilter::parse("mlx5").unwrap();
        assert!(prefix.select("mlx5_3").is_some());
        let exact = HcaFilter::parse("=mlx5").unwrap();
        assert!(exact.select("mlx5_3").is_none());
        let not = HcaFilter::parse("^mlx5_1").unwrap();
        assert!(not.select("mlx5_1").is_none());
        assert_eq!(not.select("mlx5_0"), Some(None));
        let gid = HcaFilter::parse("rocep1s0:1:3").unwrap();
        assert_eq!(gid.entries[0].gid_index, Some(3));
        assert_eq!(HcaFilter::parse("").unwrap().select("any"), Some(None));
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        for bad in [
            "^",
            "=",
            "mlx5_0:x",
            "mlx5_0:0",
            "mlx5_0:1:2:3",
            "mlx5_0:1:300",
            ",",
            "a b",
        ] {
            assert!(HcaFilter::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
