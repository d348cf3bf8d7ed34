//! Reading one variable of the table ([`super::vars`]) through a lookup function, as the table
//! says: its default when unset, its range or choices when set.
//!
//! Invariants: an empty or blank value counts as unset; every error names the variable it read
//! and quotes at most what this variable's kind allows (numbers and words, never a secret: no
//! secret goes through the readers that quote).

use std::fmt;
use std::str::FromStr;

use super::vars::{Value, Var};
use super::{err, ConfigError};

/// Reads named values; an empty value counts as unset.
pub(super) struct Source<'a>(pub(super) &'a dyn Fn(&str) -> Option<String>);

impl Source<'_> {
    /// The value, or `None` when unset or blank.
    pub(super) fn optional(&self, var: &Var) -> Option<String> {
        (self.0)(var.name).filter(|v| !v.trim().is_empty())
    }

    /// The value; an error when unset or blank.
    pub(super) fn required(&self, var: &Var) -> Result<String, ConfigError> {
        self.optional(var)
            .ok_or_else(|| err(var.name, "is required but not set"))
    }

    /// A whole number within the table's range, or the table's default when unset.
    pub(super) fn whole<T>(&self, var: &Var) -> Result<T, ConfigError>
    where
        T: FromStr + TryFrom<u64> + fmt::Display + Copy,
        u64: TryFrom<T>,
    {
        let (default, _, _) = whole_of(var);
        match T::try_from(default) {
            Ok(default) => self.whole_or(var, default),
            Err(_) => unreachable!("{}: the default does not fit its type", var.name),
        }
    }

    /// A whole number within the table's range, or `default` (derived from other variables)
    /// when unset.
    pub(super) fn whole_or<T>(&self, var: &Var, default: T) -> Result<T, ConfigError>
    where
        T: FromStr + fmt::Display + Copy,
        u64: TryFrom<T>,
    {
        let (_, min, max) = whole_of(var);
        let Some(raw) = self.optional(var) else {
            return Ok(default);
        };
        // Parsed as `T` first: a value past `T`'s own range is "not a whole number" for it.
        let value: T = raw
            .trim()
            .parse()
            .map_err(|_| err(var.name, format!("{raw:?} is not a whole number")))?;
        if !u64::try_from(value).is_ok_and(|wide| (min..=max).contains(&wide)) {
            return Err(err(
                var.name,
                format!("{value} is out of range ({min}–{max})"),
            ));
        }
        Ok(value)
    }

    /// A decimal number within the table's range; `None` when unset.
    pub(super) fn decimal(&self, var: &Var) -> Result<Option<f64>, ConfigError> {
        let Value::Decimal { min, max, .. } = var.value else {
            unreachable!("{} is not a decimal in the table", var.name)
        };
        let Some(raw) = self.optional(var) else {
            return Ok(None);
        };
        match raw.trim().parse::<f64>() {
            Ok(r) if r.is_finite() && (min..=max).contains(&r) => Ok(Some(r)),
            _ => Err(err(
                var.name,
                format!("{raw:?} is not a rate between {min} and {max} (sends per second)"),
            )),
        }
    }

    /// One of the table's words (trimmed, exact case); the first when unset.
    pub(super) fn choice(&self, var: &Var) -> Result<&'static str, ConfigError> {
        let Value::OneOf(choices) = var.value else {
            unreachable!("{} is not a choice in the table", var.name)
        };
        let Some(raw) = self.optional(var) else {
            return Ok(choices[0]);
        };
        let value = raw.trim();
        if let Some(choice) = choices.iter().find(|c| **c == value) {
            return Ok(choice);
        }
        let shown: String = value.chars().take(40).collect();
        let listed: Vec<String> = choices.iter().map(|c| format!("{c:?}")).collect();
        Err(err(
            var.name,
            format!("{shown:?} is not {}", listed.join(" or ")),
        ))
    }

    /// Text, or the table's default when unset.
    pub(super) fn text(&self, var: &Var) -> String {
        let Value::Text { default, .. } = var.value else {
            unreachable!("{} is not text with a default in the table", var.name)
        };
        self.optional(var).unwrap_or_else(|| default.to_string())
    }
}

/// The table's default and range of a whole-number variable.
fn whole_of(var: &Var) -> (u64, u64, u64) {
    match var.value {
        Value::Whole { default, min, max } => (default, min, max),
        _ => unreachable!("{} is not a whole number in the table", var.name),
    }
}
