//! Framework resolution: egg-utils' `getFrameworkPath()`, without `require()`. The framework is
//! looked up by name in the directories Node would search (see [`module_dirs`]) and only its
//! `package.json` is read, for the name and version egg-cluster logs at start.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::js::{js_to_string, normalize, path_string, resolve, truthy, JsObject};
use super::{invalid, OptionsError, OptionsInput};

/// egg-utils `getFrameworkPath()`.
pub(crate) fn resolve_framework(
    raw: &JsObject,
    base_dir: &Path,
    input: &OptionsInput,
) -> Result<PathBuf, OptionsError> {
    let pkg_path = base_dir.join("package.json");
    if !pkg_path.exists() {
        return Err(OptionsError::PackageJsonMissing(pkg_path));
    }
    // egg-utils parses the app's package.json even when it does not need
    // `egg.framework`, so a broken file is an error either way.
    let pkg = read_json(&pkg_path).map_err(|reason| OptionsError::InvalidPackageJson {
        path: pkg_path.clone(),
        reason,
    })?;

    // `options.framework || options.customEgg`
    let requested = ["framework", "customEgg"]
        .into_iter()
        .find_map(|key| raw.get(key).filter(|v| truthy(v)).map(|v| (key, v)));
    let name = match requested {
        Some((_, Value::String(s))) => {
            if Path::new(s).is_absolute() {
                return if Path::new(s).exists() {
                    Ok(PathBuf::from(s))
                } else {
                    Err(OptionsError::FrameworkMissing(s.clone()))
                };
            }
            s.clone()
        }
        Some((key, v)) => return Err(invalid(&format!("options.{key}"), "a string", v)),
        None => match pkg.get("egg").and_then(|e| e.get("framework")) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(v) if truthy(v) => {
                return Err(invalid(
                    &format!("{} egg.framework", pkg_path.display()),
                    "a string",
                    v,
                ))
            }
            _ => "egg".to_owned(),
        },
    };

    let dirs = module_dirs(base_dir, input);
    for dir in &dirs {
        let candidate = normalize(&dir.join(&name));
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(OptionsError::FrameworkNotFound {
        name,
        dirs: dirs
            .iter()
            .map(|d| path_string(d))
            .collect::<Vec<_>>()
            .join(","),
    })
}

/// Where a framework name is looked up, in egg-utils' order, with
/// `require.resolve()` replaced by the directories Node itself would search
/// from egg-cluster-rs' own location. Duplicates are dropped like the JS
/// `Set` does.
fn module_dirs(base_dir: &Path, input: &OptionsInput) -> Vec<PathBuf> {
    let mut dirs = vec![
        base_dir.join("node_modules"),
        resolve(&input.cwd, Path::new("node_modules")),
        resolve(&input.init_cwd, Path::new("node_modules")),
    ];
    dirs.extend(node_module_paths(&resolve(&input.cwd, &input.package_dir)));
    // require.resolve() also honours NODE_PATH after the node_modules chain.
    if let Some(node_path) = input.env.get("NODE_PATH") {
        dirs.extend(
            node_path
                .split(':')
                .filter(|p| !p.is_empty())
                .map(|p| resolve(&input.cwd, Path::new(p))),
        );
    }
    let mut seen = HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// Node's `Module._nodeModulePaths(from)`: `<dir>/node_modules` for `from`
/// and each ancestor, skipping directories that are themselves called
/// `node_modules`.
fn node_module_paths(from: &Path) -> Vec<PathBuf> {
    from.ancestors()
        .filter(|dir| dir.file_name().is_none_or(|n| n != "node_modules"))
        .map(|dir| dir.join("node_modules"))
        .collect()
}

pub(crate) fn read_framework_package(framework: &Path) -> Result<(String, String), OptionsError> {
    let path = framework.join("package.json");
    let pkg = read_json(&path).map_err(|reason| OptionsError::FrameworkPackage { path, reason })?;
    // egg-cluster interpolates these straight into log lines, so a missing
    // field reads "undefined" there too.
    let field = |key: &str| match pkg.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => js_to_string(v),
        None => "undefined".to_owned(),
    };
    Ok((field("name"), field("version")))
}

/// Which master ⇄ worker protocol the app's workers speak: egg-cluster 2.x's (egg 3) or
/// @eggjs/cluster 3's (egg 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    #[default]
    Egg3,
    Egg4,
}

/// The egg an app runs on, as the master found it: what its start lines say, what decides the
/// dialect, the compile cache's place and the Node.js it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egg {
    /// Where it was found (the lookup path, links kept) and its package's version.
    pub dir: PathBuf,
    pub version: String,
    /// A package named `egg` that is a wrapper: the egg it requires that decided the dialect.
    pub wraps: Option<(PathBuf, String)>,
    /// The cluster package a dependency on which decided the dialect; `None`: no package along
    /// the chain depends on either, its last version decided.
    pub cluster: Option<&'static str>,
    /// `engines.node` of each package along the chain that has one, with the package's dir
    /// and version.
    pub needs_node: Vec<(PathBuf, String, String)>,
}

impl Egg {
    /// The version of the egg that decided (a wrapper's own version says nothing).
    pub fn real_version(&self) -> &str {
        self.wraps.as_ref().map_or(&self.version, |(_, v)| v)
    }
}

/// The egg the app runs on, and so the dialect. The egg: the framework itself when its package is
/// named `egg`; else the `egg` the framework would `require()` (from its own directory up); else
/// `egg` looked up like a framework name from the app. This package as the framework re-exports
/// whichever egg the app has, so for it the framework's own copy (a devDependency) is skipped.
/// The dialect is what that egg loads (see [`follow_egg`]). No egg found: egg 3.
pub(crate) fn resolve_egg(
    framework: &Path,
    framework_name: &str,
    base_dir: &Path,
    input: &OptionsInput,
) -> (Option<Egg>, Dialect) {
    let egg = if framework_name == "egg" {
        Some(framework.to_path_buf())
    } else {
        let mut dirs = Vec::new();
        if real(framework) != real(&resolve(&input.cwd, &input.package_dir)) {
            dirs.extend(node_module_paths(&real(framework)));
        }
        dirs.extend(module_dirs(base_dir, input));
        dirs.into_iter()
            .map(|dir| normalize(&dir.join("egg")))
            .find(|egg| egg.join("package.json").is_file())
    };
    match egg {
        Some(egg) => {
            let (egg, dialect) = follow_egg(egg);
            (Some(egg), dialect)
        }
        None => (None, Dialect::Egg3),
    }
}

/// Through symlinks: an app's `node_modules/egg-cluster-rs` may be a link to this package, and
/// Node resolves a package's own `require()`s from its real path.
fn real(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap_or_else(|_| normalize(p))
}

/// A package named `egg` may be egg itself or a wrapper over it (a fork, a test harness's
/// stand-in, a re-published build, each with a version of its own). What decides is the cluster
/// package the real egg starts its cluster with: egg 3 depends on `egg-cluster`, egg 4 on
/// `@eggjs/cluster`. A package that depends on neither is followed to the `egg` it would
/// `require()` (itself excluded); only when that chain ends without an answer does the last
/// version number seen decide.
fn follow_egg(dir: PathBuf) -> (Egg, Dialect) {
    let mut found = Egg {
        dir: dir.clone(),
        version: String::new(),
        wraps: None,
        cluster: None,
        needs_node: Vec::new(),
    };
    let mut seen = HashSet::new();
    let mut current = real(&dir);
    let mut shown = dir;
    let mut version = String::new();
    while seen.insert(current.clone()) {
        let Ok(pkg) = read_json(&current.join("package.json")) else {
            break;
        };
        version = pkg
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if seen.len() == 1 {
            found.version.clone_from(&version);
        } else {
            found.wraps = Some((shown.clone(), version.clone()));
        }
        if let Some(range) = pkg.pointer("/engines/node").and_then(Value::as_str) {
            found
                .needs_node
                .push((shown.clone(), version.clone(), range.to_owned()));
        }
        let deps = pkg.get("dependencies");
        let depends_on = |name: &str| deps.and_then(|d| d.get(name)).is_some();
        for (cluster, dialect) in [
            ("@eggjs/cluster", Dialect::Egg4),
            ("egg-cluster", Dialect::Egg3),
        ] {
            if depends_on(cluster) {
                found.cluster = Some(cluster);
                return (found, dialect);
            }
        }
        let next = node_module_paths(&current)
            .into_iter()
            .map(|dir| dir.join("egg"))
            .find(|next| real(next) != current && next.join("package.json").is_file());
        match next {
            Some(next) => {
                current = real(&next);
                shown = next;
            }
            None => break,
        }
    }
    (found, dialect_of(&version))
}

/// The last resort: egg 4 and later speak @eggjs/cluster's protocol.
fn dialect_of(version: &str) -> Dialect {
    match version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
    {
        Some(major) if major >= 4 => Dialect::Egg4,
        _ => Dialect::Egg3,
    }
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    // Like utility.readJSONSync (JSON.parse), a leading BOM is an error.
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::parse;
    use crate::options::testing::{app, input, parse_err, parse_ok};
    use serde_json::json;

    #[test]
    fn framework_absolute_path() {
        let tmp = app();
        let fw = tmp.framework("frameworks/yadan", "yadan", "1.0.0");
        let o = parse_ok(input(&tmp, json!({ "framework": path_string(&fw) })));
        assert_eq!(o.framework, fw);
        assert_eq!(o.framework_name, "yadan");
        assert_eq!(o.raw["framework"], path_string(&fw));

        let missing = path_string(&tmp.path().join("missing"));
        let err = parse_err(input(&tmp, json!({ "framework": missing.clone() })));
        assert_eq!(err, format!("{missing} should exist"));
    }

    #[test]
    fn framework_lookup_order() {
        let tmp = app();
        let cwd = tmp.path().join("cwd");
        let init = tmp.path().join("init");
        let pkg_nm = tmp.path().join("node_modules"); // an ancestor of package_dir
        tmp.framework("cwd/node_modules/a", "a-cwd", "1");
        tmp.framework("init/node_modules/a", "a-init", "1");
        tmp.framework("init/node_modules/b", "b-init", "1");
        tmp.framework("node_modules/b", "b-pkg", "1");
        tmp.framework("node_modules/c", "c-pkg", "1");
        tmp.framework("node_modules/@scope/d", "@scope/d", "2");
        tmp.framework("app/node_modules/a", "a-app", "1");

        let run = |name: &str| {
            let mut i = input(&tmp, json!({ "framework": name }));
            i.options["baseDir"] = json!(path_string(&tmp.path().join("app")));
            i.cwd = cwd.clone();
            i.init_cwd = init.clone();
            parse(i)
        };
        assert_eq!(run("a").expect("a").framework_name, "a-app");
        assert_eq!(run("b").expect("b").framework_name, "b-init");
        assert_eq!(run("c").expect("c").framework_name, "c-pkg");
        let d = run("@scope/d").expect("d");
        assert_eq!(d.framework, pkg_nm.join("@scope/d"));
        assert_eq!(d.framework_version, "2");

        fs::remove_dir_all(tmp.path().join("app/node_modules/a")).expect("rm");
        assert_eq!(run("a").expect("a").framework_name, "a-cwd");

        let err = run("zzz").expect_err("missing").to_string();
        let app_nm = tmp.path().join("app/node_modules");
        let prefix = format!(
            "zzz is not found in {},{},{},{},{}",
            app_nm.display(),
            cwd.join("node_modules").display(),
            init.join("node_modules").display(),
            tmp.path().join("pkg/node_modules").display(),
            pkg_nm.display(),
        );
        assert!(err.starts_with(&prefix), "{err}\n{prefix}");
        assert!(err.ends_with(",/node_modules"), "{err}");
    }

    #[test]
    fn framework_from_custom_egg_and_package_json() {
        let tmp = app();
        tmp.framework("app/node_modules/custom", "custom", "3");
        tmp.framework("app/node_modules/from-pkg", "from-pkg", "4");
        let o = parse_ok(input(
            &tmp,
            json!({ "framework": "", "customEgg": "custom" }),
        ));
        assert_eq!(o.framework_name, "custom");

        tmp.write(
            "app/package.json",
            r#"{"name":"app","egg":{"framework":"from-pkg"}}"#,
        );
        assert_eq!(parse_ok(input(&tmp, json!({}))).framework_name, "from-pkg");
        // An explicit framework still wins over package.json.
        let o = parse_ok(input(&tmp, json!({ "framework": "custom" })));
        assert_eq!(o.framework_name, "custom");

        let err = parse_err(input(&tmp, json!({ "framework": 5 })));
        assert_eq!(err, "options.framework should be a string, got 5");
    }

    #[test]
    fn node_path_is_searched_and_module_paths_skip_node_modules_dirs() {
        let tmp = app();
        tmp.framework("global/g", "g", "1");
        let mut i = input(&tmp, json!({ "framework": "g" }));
        i.env
            .insert("NODE_PATH".into(), path_string(&tmp.path().join("global")));
        assert_eq!(parse_ok(i).framework_name, "g");

        let paths = node_module_paths(Path::new("/a/node_modules/pkg"));
        let expected: Vec<PathBuf> = [
            "/a/node_modules/pkg/node_modules",
            "/a/node_modules",
            "/node_modules",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(paths, expected);
    }

    #[test]
    fn framework_package_json_problems() {
        let tmp = app();
        fs::create_dir_all(tmp.path().join("app/node_modules/nopkg")).expect("mkdir");
        let err = parse_err(input(&tmp, json!({ "framework": "nopkg" })));
        assert!(err.starts_with("options.framework: cannot read "), "{err}");

        tmp.write("app/node_modules/bare/package.json", "{}");
        let o = parse_ok(input(&tmp, json!({ "framework": "bare" })));
        assert_eq!(o.framework_name, "undefined");
        assert_eq!(o.framework_version, "undefined");
    }

    fn egg_pkg(tmp: &crate::options::testing::TempDir, dir: &str, version: &str, cluster: &str) {
        let deps = if cluster.is_empty() {
            json!({})
        } else {
            json!({ cluster: "^1" })
        };
        tmp.write(
            &format!("{dir}/package.json"),
            &json!({ "name": "egg", "version": version, "dependencies": deps }).to_string(),
        );
    }

    #[test]
    fn dialect_from_the_cluster_package_egg_depends_on() {
        let tmp = app();
        let dialect =
            |tmp: &crate::options::testing::TempDir| parse_ok(input(tmp, json!({}))).dialect;
        egg_pkg(&tmp, "app/node_modules/egg", "3.30.0", "egg-cluster");
        assert_eq!(dialect(&tmp), Dialect::Egg3);
        egg_pkg(&tmp, "app/node_modules/egg", "4.0.10", "@eggjs/cluster");
        assert_eq!(dialect(&tmp), Dialect::Egg4);
        // A version number does not decide when the dependencies do.
        egg_pkg(&tmp, "app/node_modules/egg", "3.0.0", "@eggjs/cluster");
        assert_eq!(dialect(&tmp), Dialect::Egg4);
        egg_pkg(&tmp, "app/node_modules/egg", "9.9.9", "egg-cluster");
        assert_eq!(dialect(&tmp), Dialect::Egg3);
        // Neither: the last resort is the version.
        egg_pkg(&tmp, "app/node_modules/egg", "4.1.0", "");
        assert_eq!(dialect(&tmp), Dialect::Egg4);
        egg_pkg(&tmp, "app/node_modules/egg", "3.1.0", "");
        assert_eq!(dialect(&tmp), Dialect::Egg3);
    }

    #[test]
    fn a_wrapper_named_egg_is_followed_to_the_egg_it_requires() {
        let tmp = app();
        // `{"name": "egg", "version": "9.9.9"}` whose index.js is `require('egg')` over egg 3.
        egg_pkg(&tmp, "app/node_modules/egg", "9.9.9", "");
        egg_pkg(
            &tmp,
            "app/node_modules/egg/node_modules/egg",
            "3.34.0",
            "egg-cluster",
        );
        let o = parse_ok(input(&tmp, json!({})));
        assert_eq!(o.dialect, Dialect::Egg3);
        assert_eq!(o.framework_version, "9.9.9");
        // The egg the workers load is still the app's (the wrapper).
        let egg = o.egg.expect("found");
        assert_eq!(egg.dir, tmp.path().join("app/node_modules/egg"));
        assert_eq!(egg.version, "9.9.9");
        // ...and the egg it wraps decided, through its dependency on egg-cluster.
        let wrapped = tmp.path().join("app/node_modules/egg/node_modules/egg");
        assert_eq!(egg.wraps, Some((wrapped, "3.34.0".to_string())));
        assert_eq!(egg.cluster, Some("egg-cluster"));
        assert_eq!(egg.real_version(), "3.34.0");

        // A wrapper found up the tree from an absolute framework path, and the other way round.
        egg_pkg(&tmp, "fw/wrapper", "1.0.0", "");
        egg_pkg(&tmp, "fw/node_modules/egg", "3.9.0", "@eggjs/cluster");
        let fw = path_string(&tmp.path().join("fw/wrapper"));
        assert_eq!(
            parse_ok(input(&tmp, json!({ "framework": fw }))).dialect,
            Dialect::Egg4
        );

        // A wrapper over nothing: its own version, as the last resort.
        fs::remove_dir_all(tmp.path().join("fw/node_modules")).expect("rm");
        assert_eq!(
            parse_ok(input(&tmp, json!({ "framework": fw }))).dialect,
            Dialect::Egg3
        );
    }

    #[test]
    fn a_framework_on_egg_gets_the_egg_it_requires() {
        let tmp = app();
        egg_pkg(&tmp, "app/node_modules/egg", "3.34.0", "egg-cluster");
        tmp.framework("app/node_modules/yadan", "yadan", "1.0.0");
        egg_pkg(
            &tmp,
            "app/node_modules/yadan/node_modules/egg",
            "4.0.0",
            "@eggjs/cluster",
        );
        let o = parse_ok(input(&tmp, json!({ "framework": "yadan" })));
        assert_eq!(o.dialect, Dialect::Egg4);
        assert_eq!(
            o.egg.map(|e| e.dir),
            Some(tmp.path().join("app/node_modules/yadan/node_modules/egg"))
        );
        // Without its own: the app's, found up the tree from the framework.
        fs::remove_dir_all(tmp.path().join("app/node_modules/yadan/node_modules")).expect("rm");
        let o = parse_ok(input(&tmp, json!({ "framework": "yadan" })));
        assert_eq!(o.dialect, Dialect::Egg3);
        assert_eq!(
            o.egg.map(|e| e.dir),
            Some(tmp.path().join("app/node_modules/egg"))
        );
    }

    #[test]
    fn the_node_an_egg_needs() {
        let tmp = app();
        let write = |engines: &str| {
            tmp.write(
                "app/node_modules/egg/package.json",
                &format!(
                    r#"{{"name":"egg","version":"4.1.2-beta.9","engines":{engines},"dependencies":{{"@eggjs/cluster":"4"}}}}"#
                ),
            );
        };
        write(r#"{"node":">=22.18.0"}"#);
        let on = |node: &str| {
            let mut i = input(&tmp, json!({}));
            i.node_version = node.into();
            parse(i)
        };
        assert!(on("v22.18.0").is_ok());
        assert!(on("v24.1.0").is_ok());
        let err = on("v22.17.1").expect_err("too old");
        let egg = tmp.path().join("app/node_modules/egg");
        assert_eq!(
            err.to_string(),
            format!(
                "egg 4.1.2-beta.9 ({}) needs Node.js >=22.18.0 (engines.node of its package.json); this is Node.js v22.17.1",
                egg.display()
            )
        );
        // what cannot be read is no requirement; no engines, none either
        write(r#"{"node":"lts"}"#);
        assert!(on("v20.0.0").is_ok());
        write(r#"{}"#);
        assert!(on("v20.0.0").is_ok());

        // a wrapper over egg 4.1: the wrapped egg's requirement counts too
        write(r#"{}"#);
        tmp.write(
            "app/node_modules/egg/package.json",
            r#"{"name":"egg","version":"9.9.9"}"#,
        );
        tmp.write(
            "app/node_modules/egg/node_modules/egg/package.json",
            r#"{"name":"egg","version":"4.1.0","engines":{"node":">= 22.18.0"},"dependencies":{"@eggjs/cluster":"4"}}"#,
        );
        let err = on("v20.19.0").expect_err("too old").to_string();
        assert!(err.starts_with("egg 4.1.0 ("), "{err}");
        assert!(err.contains("needs Node.js >= 22.18.0"), "{err}");
    }
}
