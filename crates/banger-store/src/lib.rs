//! SQLite state store: the only crate that knows SQL
