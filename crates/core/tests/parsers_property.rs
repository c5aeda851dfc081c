//! The domain parsers take any text without panicking, and what they accept is well formed.

use fluxgate_core::{AgentName, FullPath, GitRef, RefPattern, Sha};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn full_paths_are_normalised_or_refused(raw in ".{0,80}") {
        if let Ok(path) = FullPath::parse(&raw) {
            prop_assert!(!path.as_str().is_empty());
            prop_assert!(!path.as_str().starts_with('/') && !path.as_str().ends_with('/'));
            prop_assert!(!path.as_str().ends_with(".git"));
            prop_assert!(!path.as_str().split('/').any(|s| s.is_empty() || s == "." || s == ".."));
            prop_assert!(path.as_str().is_ascii());
            prop_assert_eq!(path.key(), path.as_str().to_ascii_lowercase());
            // Parsing is idempotent: the normal form parses to itself.
            let again = FullPath::parse(path.as_str()).unwrap();
            prop_assert_eq!(again.as_str(), path.as_str());
        }
    }

    #[test]
    fn rebase_and_strip_root_never_panic_and_move_within(
        raw in "\\PC{1,30}", old in "\\PC{1,12}", new in "\\PC{1,12}", case in any::<bool>(),
    ) {
        // Build the path below `old` so that rebasing has something to do, in either case.
        let below = format!("{old}/{raw}");
        let below = if case { below.to_uppercase() } else { below };
        if let (Ok(path), Ok(old), Ok(new)) =
            (FullPath::parse(&below), FullPath::parse(&old), FullPath::parse(&new))
        {
            if let Some(moved) = path.rebase(&old, &new) {
                prop_assert!(moved.is_within(&new), "{} not within {}", moved, new);
            }
            let _ = path.strip_root(Some(&old));
        }
    }

    #[test]
    fn url_forms_of_a_path_parse_to_it(path in "[a-z][a-z0-9_-]{0,8}(/[a-z][a-z0-9_.-]{0,8}){1,3}") {
        prop_assume!(!path.ends_with(".git") && !path.split('/').any(|s| s == "." || s == ".."));
        let plain = FullPath::parse(&path).unwrap();
        for form in [
            format!("https://gitlab.example.com/{path}.git"),
            format!("ssh://git@gitlab.example.com:2222/{path}"),
            format!("git@gitlab.example.com:{path}.git"),
        ] {
            prop_assert_eq!(FullPath::parse(&form).unwrap(), plain.clone(), "{}", form);
        }
    }

    #[test]
    fn refs_shas_names_and_patterns_never_panic(raw in "\\PC{0,80}") {
        let _ = GitRef::parse(&raw);
        let _ = AgentName::parse(&raw);
        if let Ok(sha) = Sha::parse(&raw) {
            prop_assert!(sha.as_str().len() == 40 || sha.as_str().len() == 64);
            prop_assert!(sha.as_str().bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        }
        if let Ok(pattern) = RefPattern::parse(&raw)
            && let Ok(git_ref) = GitRef::parse(&format!("refs/heads/{raw}"))
        {
            // A pattern matches the branch of the same name when it has no glob characters.
            if !raw.contains(['*', '?', '[', ']', '{', '}', '\\']) && !raw.starts_with("refs/") {
                prop_assert!(pattern.matches(&git_ref), "{} should match {}", raw, git_ref);
            }
        }
    }
}
