//! The crate's single error type.

use std::path::PathBuf;

/// Every fallible public call of this crate returns `Result<_, Error>`.
///
/// `Debug` prints the same message as `Display`, so an `Error` returned from `main` reads as a
/// sentence rather than a struct dump.
#[derive(thiserror::Error)]
pub enum Error {
    /// A configuration that cannot describe a valid model or schedule
    /// (e.g. hidden size not divisible by the number of heads, zero sizes).
    #[error("invalid config: {0}")]
    InvalidConfig(String),

    /// A tensor argument with the wrong rank, shape or value range.
    #[error("invalid input `{name}`: expected {expected}, got {got}")]
    Shape {
        /// Which argument.
        name: String,
        /// What was expected, in words or as a shape.
        expected: String,
        /// What was given.
        got: String,
    },

    /// Any other invalid argument value.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A checkpoint whose keys or shapes do not match the model. Every problem is listed.
    #[error("{}", format_checkpoint_mismatch(missing, unexpected, mismatched))]
    CheckpointMismatch {
        /// Keys the model needs that the checkpoint lacks (checkpoint naming).
        missing: Vec<String>,
        /// Keys in the checkpoint the model has no place for.
        unexpected: Vec<String>,
        /// Keys present in both whose shapes differ: `(key, expected shape, found shape)`.
        mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
    },

    /// A file that cannot be read or parsed.
    #[error("cannot read `{path}`: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why (I/O error, format error, unsupported dtype, ...).
        reason: String,
    },

    /// A file that cannot be written.
    #[error("cannot write `{path}`: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// A numerical failure (NaN/inf) detected at run time.
    #[error("numerical error: {0}")]
    Numerical(String),
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn format_checkpoint_mismatch(
    missing: &[String],
    unexpected: &[String],
    mismatched: &[(String, Vec<usize>, Vec<usize>)],
) -> String {
    let mut s = format!(
        "checkpoint does not match the model ({} missing, {} unexpected, {} mis-shaped keys)",
        missing.len(),
        unexpected.len(),
        mismatched.len()
    );
    if !missing.is_empty() {
        s.push_str("\n  missing: ");
        s.push_str(&missing.join(", "));
    }
    if !unexpected.is_empty() {
        s.push_str("\n  unexpected: ");
        s.push_str(&unexpected.join(", "));
    }
    for (k, e, f) in mismatched {
        s.push_str(&format!("\n  mis-shaped: {k}: model expects {e:?}, checkpoint has {f:?}"));
    }
    s
}

/// Returns `Err(Error::InvalidConfig)` with `msg` unless `cond` holds.
pub(crate) fn ensure_config(cond: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if cond { Ok(()) } else { Err(Error::InvalidConfig(msg())) }
}

/// Returns `Err(Error::InvalidConfig)` "`{name} {value} is not divisible by {by_name} {by}`"
/// unless `by` divides `value`.
pub(crate) fn ensure_divisible(name: &str, value: usize, by_name: &str, by: usize) -> Result<()> {
    ensure_config(value.is_multiple_of(by), || format!("{name} {value} is not divisible by {by_name} {by}"))
}

/// Returns `Err(Error::InvalidConfig)` naming the first of `fields` that is zero.
pub(crate) fn ensure_positive(fields: &[(&str, usize)]) -> Result<()> {
    for (name, v) in fields {
        ensure_config(*v > 0, || format!("{name} must be positive"))?;
    }
    Ok(())
}

/// Checks a tensor's dims against an expected pattern; `None` entries match anything.
pub(crate) fn ensure_dims<const D: usize>(
    name: &str,
    got: [usize; D],
    expected: [Option<usize>; D],
) -> Result<()> {
    let ok = got.iter().zip(expected.iter()).all(|(g, e)| e.is_none_or(|e| e == *g));
    if ok {
        return Ok(());
    }
    let exp: Vec<String> =
        expected.iter().map(|e| e.map_or("_".to_string(), |v| v.to_string())).collect();
    Err(Error::Shape {
        name: name.to_string(),
        expected: format!("[{}]", exp.join(", ")),
        got: format!("{got:?}"),
    })
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatch_lists_every_key() {
        let e = Error::CheckpointMismatch {
            missing: vec!["a.weight".into(), "b.bias".into()],
            unexpected: vec!["c".into()],
            mismatched: vec![("d".into(), vec![2, 3], vec![3, 2])],
        };
        let m = e.to_string();
        for k in ["a.weight", "b.bias", "c", "d: model expects [2, 3], checkpoint has [3, 2]"] {
            assert!(m.contains(k), "{m}");
        }
    }

    #[test]
    fn ensure_dims_reports_pattern() {
        assert!(ensure_dims("x", [2, 3], [None, Some(3)]).is_ok());
        let e = ensure_dims("x", [2, 4], [None, Some(3)]).unwrap_err().to_string();
        assert!(e.contains("[_, 3]") && e.contains("[2, 4]"), "{e}");
    }
}
