//! Where the workers keep V8's compile cache (lib/compile_cache.js enables it there, portable).
//!
//! egg 4.1's own master, its launcher (@eggjs/scripts 5) and `egg-bin manifest generate` keep one
//! in `<baseDir>/.egg/compile-cache`: a cache built into an image at build time is read by the
//! workers of every later start, and `egg-bin manifest clean` removes it. On egg >= 4.1 ours is
//! that one. egg 3 and 4.0 have none and no `.egg/`: ours is in the app's run dir, which their
//! apps already ignore. A cache the user chose (`NODE_COMPILE_CACHE`) or turned off
//! (`NODE_DISABLE_COMPILE_CACHE`) is Node's business: the workers inherit the variable and the
//! master picks nothing; `EGG_CLUSTER_RS_COMPILE_CACHE=0` turns ours off.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::framework::Egg;

pub(crate) fn dir(
    base_dir: &Path,
    egg: Option<&Egg>,
    env: &HashMap<String, String>,
) -> Option<PathBuf> {
    let set = |name: &str| env.get(name).is_some_and(|v| !v.is_empty());
    if set("NODE_COMPILE_CACHE")
        || set("NODE_DISABLE_COMPILE_CACHE")
        || env.get("EGG_CLUSTER_RS_COMPILE_CACHE").map(String::as_str) == Some("0")
    {
        return None;
    }
    let egg41 = egg.is_some_and(|e| at_least_4_1(e.real_version()));
    Some(if egg41 {
        base_dir.join(".egg").join("compile-cache")
    } else {
        base_dir.join("run").join("compile-cache")
    })
}

/// `4.1.0`, its prereleases (`4.1.2-beta.9`) and anything later.
fn at_least_4_1(version: &str) -> bool {
    let mut parts = version
        .split(['-', '+'])
        .next()
        .unwrap_or_default()
        .split('.')
        .map(|p| p.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (4, 1),
        (Some(major), None) => major > 4,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::testing::env;

    fn egg(version: &str, wraps: Option<&str>) -> Egg {
        Egg {
            dir: PathBuf::from("/app/node_modules/egg"),
            version: version.into(),
            wraps: wraps.map(|v| (PathBuf::from("/elsewhere/egg"), v.to_string())),
            cluster: Some("@eggjs/cluster"),
            needs_node: Vec::new(),
        }
    }

    #[test]
    fn egg_4_1_keeps_it_where_its_own_tools_do() {
        let base = Path::new("/app");
        let run = Some(PathBuf::from("/app/run/compile-cache"));
        let dot_egg = Some(PathBuf::from("/app/.egg/compile-cache"));
        assert_eq!(
            dir(base, Some(&egg("4.1.2-beta.9", None)), &env(&[])),
            dot_egg
        );
        assert_eq!(dir(base, Some(&egg("4.2.0", None)), &env(&[])), dot_egg);
        assert_eq!(dir(base, Some(&egg("5", None)), &env(&[])), dot_egg);
        assert_eq!(dir(base, Some(&egg("4.0.10", None)), &env(&[])), run);
        assert_eq!(dir(base, Some(&egg("3.34.0", None)), &env(&[])), run);
        assert_eq!(dir(base, None, &env(&[])), run);
        // a wrapper's own version says nothing: the egg it wraps decides
        assert_eq!(
            dir(base, Some(&egg("9.9.9", Some("3.34.0"))), &env(&[])),
            run
        );
        assert_eq!(
            dir(base, Some(&egg("1.0.0", Some("4.1.0"))), &env(&[])),
            dot_egg
        );
    }

    #[test]
    fn the_users_cache_and_the_switches() {
        let base = Path::new("/app");
        let e = egg("4.1.0", None);
        for vars in [
            [("NODE_COMPILE_CACHE", "/tmp/mine")],
            [("NODE_DISABLE_COMPILE_CACHE", "1")],
            [("EGG_CLUSTER_RS_COMPILE_CACHE", "0")],
        ] {
            assert_eq!(dir(base, Some(&e), &env(&vars)), None, "{vars:?}");
        }
        // empty is unset, as Node reads them
        let empty = env(&[
            ("NODE_COMPILE_CACHE", ""),
            ("EGG_CLUSTER_RS_COMPILE_CACHE", "1"),
        ]);
        assert!(dir(base, Some(&e), &empty).is_some());
    }
}
