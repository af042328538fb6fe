//! TCP links (mio). Being written for issue 3.
