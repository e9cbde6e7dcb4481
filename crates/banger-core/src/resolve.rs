//! Resolving what a user typed (`web`, `3f2a`) to one object: exact id, then
//! exact name, then a unique prefix of an id or a name. More than one match
//! is an error that lists them.

use crate::error::{CoreError, CoreResult};

/// Anything with an id and a name.
pub trait Named {
    fn id(&self) -> &str;
    fn name(&self) -> &str;
}

impl Named for banger_api::VmRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
}
impl Named for banger_api::ImageRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
}
impl Named for banger_api::KernelRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// Pick the one object `reference` means among `candidates` (all objects
/// whose id or name starts with `reference`).
pub fn pick<T: Named>(kind: &str, reference: &str, candidates: Vec<T>) -> CoreResult<T> {
    if reference.is_empty() {
        return Err(CoreError::invalid(format!(
            "{kind} reference must not be empty"
        )));
    }
    let mut candidates = candidates;
    if let Some(i) = candidates.iter().position(|c| c.id() == reference) {
        return Ok(candidates.swap_remove(i));
    }
    if let Some(i) = candidates.iter().position(|c| c.name() == reference) {
        return Ok(candidates.swap_remove(i));
    }
    match candidates.len() {
        0 => Err(CoreError::not_found(format!(
            "no {kind} named {reference:?}"
        ))),
        1 => Ok(candidates.remove(0)),
        _ => {
            let mut names: Vec<String> = candidates
                .iter()
                .map(|c| format!("{} ({})", c.name(), c.id()))
                .collect();
            names.sort();
            Err(CoreError::ambiguous(format!(
                "{kind} reference {reference:?} is ambiguous: it matches {}",
                names.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[derive(Debug)]
    struct T(&'static str, &'static str);
    impl Named for T {
        fn id(&self) -> &str {
            self.0
        }
        fn name(&self) -> &str {
            self.1
        }
    }

    #[test]
    fn exact_beats_prefix() {
        let got = pick("vm", "web", vec![T("aa", "web"), T("bb", "web2")]).unwrap();
        assert_eq!(got.0, "aa");
    }

    #[test]
    fn unique_prefix_resolves() {
        assert_eq!(pick("vm", "we", vec![T("aa", "web")]).unwrap().1, "web");
    }

    #[test]
    fn ambiguity_lists_candidates() {
        let e = pick("vm", "w", vec![T("aa", "web"), T("bb", "wiki")]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Ambiguous);
        let m = e.to_string();
        assert!(m.contains("web (aa)") && m.contains("wiki (bb)"), "{m}");
    }

    #[test]
    fn nothing_is_not_found() {
        let e = pick::<T>("vm", "zz", vec![]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
}
