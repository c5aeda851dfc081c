//! `check_ref_format` and `GitRef::parse` against an independent oracle: git's ref-name
//! rules written declaratively over the whole string, where the code under test scans
//! bytes the way git's `refs.c` does.

use fluxgate_core::GitRef;
use fluxgate_core::git::check_ref_format;
use proptest::prelude::*;

/// `git check-ref-format <name>` (no options), rule by rule from its manual page.
fn git_accepts(name: &str) -> bool {
    let forbidden = |c: char| (c as u32) < 0x20 || c == '\u{7f}' || " ~^:?*[\\".contains(c);
    let components: Vec<&str> = name.split('/').collect();
    name != "@"
        && !name.contains("..")
        && !name.contains("@{")
        && !name.chars().any(forbidden)
        && !name.ends_with('.')
        && components.len() >= 2
        && components
            .iter()
            .all(|c| !c.is_empty() && !c.starts_with('.') && !c.ends_with(".lock"))
}

/// What GitLab sends: a git-valid ref under `refs/` with two or more components after it.
fn full_ref(name: &str) -> bool {
    git_accepts(name)
        && name
            .strip_prefix("refs/")
            .is_some_and(|rest| rest.split('/').count() >= 2)
        && name.len() <= fluxgate_core::git::MAX_REF_LEN
}

/// Names built from the pieces the rules are about, so that every rule is hit often.
fn ref_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("refs/".to_owned()),
        Just("heads/".to_owned()),
        Just("tags/".to_owned()),
        Just("/".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just(".lock".to_owned()),
        Just("lock".to_owned()),
        Just("@".to_owned()),
        Just("{".to_owned()),
        Just("@{".to_owned()),
        Just("main".to_owned()),
        Just("v1".to_owned()),
        Just("ß".to_owned()),
        "[~^:?*\\[\\\\ \t\u{7f}\u{0}]".prop_map(|c| c.to_string()),
        "[a-z0-9_-]{1,3}",
    ];
    prop::collection::vec(piece, 0..10).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8192))]

    #[test]
    fn check_ref_format_agrees_with_the_oracle(name in ref_like()) {
        prop_assert_eq!(check_ref_format(&name).is_ok(), git_accepts(&name), "{:?}", name);
    }

    #[test]
    fn git_refs_are_exactly_the_full_well_formed_ones(name in ref_like()) {
        let parsed = GitRef::parse(&name);
        prop_assert_eq!(parsed.is_ok(), full_ref(&name), "{:?}: {:?}", name, parsed);
    }

    #[test]
    fn any_text_agrees_with_the_oracle(name in "\\PC{0,40}") {
        prop_assert_eq!(check_ref_format(&name).is_ok(), git_accepts(&name), "{:?}", name);
    }
}
