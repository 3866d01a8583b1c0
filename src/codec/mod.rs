//! The value codec (placeholder; see issue 2).
