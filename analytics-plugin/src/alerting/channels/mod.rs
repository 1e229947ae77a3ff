//! The channel kinds: one folder per built-in kind, each registering itself
//! through `inventory`, and `external/` for `.so` channels.
