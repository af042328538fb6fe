//! `FERROCOLL_COMPRESSION`: the compression a program asks for, as values — [`Codec`] (a
//! codec and its parameters, with its spelling) and [`CompressionSetting`] (a codec, or
//! `auto`). They live with the configuration so that [`Config`](super::Config) can hold the
//! setting and this module can read the variable; the codecs themselves, their encoded sizes
//! (`Codec::encoded_len`) and `auto`'s choice by link bandwidth (`CompressionSetting::resolve`)
//! are in `crate::compress`, which re-exports these types.

use crate::error::{Error, Result};

/// Default elements per scale block of the fp8 and 1-bit codecs (DeepSeek-V3's fine-grained
/// scaling uses 128).
pub const DEFAULT_BLOCK: usize = 128;

/// How gradients are compressed on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Codec {
    /// No compression: a plain f32 all-reduce.
    None,
    /// IEEE half precision (2 bytes/element); beyond ±65504 becomes ±infinity.
    Fp16,
    /// bfloat16 (2 bytes/element), round to nearest even.
    Bf16,
    /// OCP fp8 E4M3 with one f32 scale per `block` elements (≈1 byte/element).
    Fp8E4M3 {
        /// Elements per scale.
        block: usize,
    },
    /// OCP fp8 E5M2 with one f32 scale per `block` elements (≈1 byte/element).
    Fp8E5M2 {
        /// Elements per scale.
        block: usize,
    },
    /// The `fraction` (0 < fraction ≤ 1) largest-magnitude elements, as values and indices
    /// (8 bytes per kept element).
    TopK {
        /// Fraction of the elements kept.
        fraction: f64,
    },
    /// The sign of each element (1 bit) and one f32 scale (mean magnitude) per `block`.
    OneBit {
        /// Elements per scale.
        block: usize,
    },
    /// PowerSGD: a rank-`rank` approximation P·Qᵀ of a 2-D gradient.
    PowerSgd {
        /// Rank of the approximation.
        rank: usize,
    },
}

impl Codec {
    /// Whether the codec drops information that error feedback should carry to the next
    /// step (every codec but `None`, `Fp16` and `Bf16`).
    pub fn needs_error_feedback(&self) -> bool {
        !matches!(self, Codec::None | Codec::Fp16 | Codec::Bf16)
    }

    /// Checks the parameters: blocks ≥ 1, 0 < fraction ≤ 1, rank ≥ 1.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: &str| {
            Err(Error::InvalidCodec {
                codec: self.to_string(),
                reason: reason.into(),
            })
        };
        match *self {
            Codec::Fp8E4M3 { block } | Codec::Fp8E5M2 { block } | Codec::OneBit { block }
                if block == 0 =>
            {
                bad("block size must be at least 1")
            }
            Codec::TopK { fraction } if fraction.is_nan() || fraction <= 0.0 || fraction > 1.0 => {
                bad("fraction k must be in (0, 1]")
            }
            Codec::PowerSgd { rank: 0 } => bad("rank must be at least 1"),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for Codec {
    /// The `FERROCOLL_COMPRESSION` spelling (blocks other than the default are shown).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let block = |f: &mut std::fmt::Formatter<'_>, name: &str, b: usize| {
            if b == DEFAULT_BLOCK {
                write!(f, "{name}")
            } else {
                write!(f, "{name}:{b}")
            }
        };
        match *self {
            Codec::None => write!(f, "none"),
            Codec::Fp16 => write!(f, "fp16"),
            Codec::Bf16 => write!(f, "bf16"),
            Codec::Fp8E4M3 { block: b } => block(f, "fp8", b),
            Codec::Fp8E5M2 { block: b } => block(f, "fp8e5m2", b),
            Codec::TopK { fraction } => write!(f, "topk:{fraction}"),
            Codec::OneBit { block: b } => block(f, "onebit", b),
            Codec::PowerSgd { rank } => write!(f, "powersgd:{rank}"),
        }
    }
}

impl std::str::FromStr for Codec {
    type Err = Error;

    /// Parses `none|fp16|bf16|fp8[:BLOCK]|fp8e4m3[:BLOCK]|fp8e5m2[:BLOCK]|topk:FRACTION|
    /// onebit[:BLOCK]|powersgd:RANK` (not `auto`: see [`CompressionSetting`]).
    fn from_str(s: &str) -> Result<Codec> {
        let s = s.trim().to_ascii_lowercase();
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s.as_str(), None),
        };
        let bad = |reason: String| Error::InvalidCodec {
            codec: s.clone(),
            reason,
        };
        let block = || -> Result<usize> {
            arg.map_or(Ok(DEFAULT_BLOCK), |a| {
                a.parse()
                    .map_err(|_| bad(format!("block size {a:?} is not a whole number")))
            })
        };
        let codec = match (name, arg) {
            ("none", None) => Codec::None,
            ("fp16", None) => Codec::Fp16,
            ("bf16", None) => Codec::Bf16,
            ("fp8" | "fp8e4m3", _) => Codec::Fp8E4M3 { block: block()? },
            ("fp8e5m2", _) => Codec::Fp8E5M2 { block: block()? },
            ("onebit", _) => Codec::OneBit { block: block()? },
            ("topk", Some(a)) => Codec::TopK {
                fraction: a
                    .parse()
                    .map_err(|_| bad(format!("fraction {a:?} is not a number")))?,
            },
            ("powersgd", Some(a)) => Codec::PowerSgd {
                rank: a
                    .parse()
                    .map_err(|_| bad(format!("rank {a:?} is not a whole number")))?,
            },
            ("topk", None) => return Err(bad("top-k needs a fraction, e.g. topk:0.01".into())),
            ("powersgd", None) => return Err(bad("PowerSGD needs a rank, e.g. powersgd:4".into())),
            _ => {
                return Err(bad(
                    "expected none, fp16, bf16, fp8, fp8e5m2, topk:F, onebit, powersgd:R".into(),
                ))
            }
        };
        codec.validate()?;
        Ok(codec)
    }
}

/// The environment variable read by [`CompressionSetting::from_env`].
pub const COMPRESSION_VAR: &str = "FERROCOLL_COMPRESSION";

/// What `FERROCOLL_COMPRESSION` asks for: one codec, or `auto`.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum CompressionSetting {
    /// Always this codec.
    Fixed(Codec),
    /// A codec chosen from the measured link bandwidth (`compress::auto_codec`). Opt-in
    /// only: compression is lossy, so the default is [`Codec::None`].
    #[default]
    Auto,
}

impl CompressionSetting {
    /// Parses a value of `FERROCOLL_COMPRESSION` (`auto` or a [`Codec`] spelling); a bad
    /// value is an [`Error::Config`] naming the variable.
    pub fn parse(value: &str) -> Result<CompressionSetting> {
        value.parse().map_err(|e: Error| Error::Config {
            var: COMPRESSION_VAR.into(),
            value: value.into(),
            reason: e.to_string(),
        })
    }

    /// Reads `FERROCOLL_COMPRESSION` once; unset or empty means no compression.
    pub fn from_env() -> Result<CompressionSetting> {
        CompressionSetting::from_vars(|k| std::env::var(k).ok())
    }

    /// Like [`CompressionSetting::from_env`], with variables from `get` (what
    /// [`Config::from_vars`](super::Config::from_vars) uses).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<CompressionSetting> {
        match get(COMPRESSION_VAR) {
            Some(v) if !v.trim().is_empty() => CompressionSetting::parse(&v),
            _ => Ok(CompressionSetting::Fixed(Codec::None)),
        }
    }
}

/// `auto` or a [`Codec`] spelling; a bad one is the codec parser's error (for a command-line
/// flag; [`CompressionSetting::parse`] names the environment variable instead).
impl std::str::FromStr for CompressionSetting {
    type Err = Error;

    fn from_str(value: &str) -> Result<CompressionSetting> {
        if value.trim().eq_ignore_ascii_case("auto") {
            return Ok(CompressionSetting::Auto);
        }
        value.parse::<Codec>().map(CompressionSetting::Fixed)
    }
}
