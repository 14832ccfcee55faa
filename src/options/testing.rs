//! Fixtures for the options tests: an app on disk with a framework installed, and its input.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};

use super::{parse, Options, OptionsInput};

/// A unique temporary directory removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "egg-cluster-rs-options-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    pub(crate) fn write(&self, rel: &str, contents: &str) -> PathBuf {
        let path = self.0.join(rel);
        fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        fs::write(&path, contents).expect("write");
        path
    }

    pub(crate) fn framework(&self, dir: &str, name: &str, version: &str) -> PathBuf {
        self.write(
            &format!("{dir}/package.json"),
            &json!({ "name": name, "version": version }).to_string(),
        );
        self.0.join(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// An app at `<tmp>/app` with egg installed in its node_modules.
pub(crate) fn app() -> TempDir {
    let tmp = TempDir::new();
    tmp.write("app/package.json", r#"{"name":"app"}"#);
    tmp.framework("app/node_modules/egg", "egg", "2.37.0");
    fs::create_dir_all(tmp.path().join("pkg")).expect("mkdir");
    tmp
}

pub(crate) fn input(tmp: &TempDir, options: Value) -> OptionsInput {
    let app = tmp.path().join("app");
    OptionsInput {
        options,
        env: HashMap::new(),
        cwd: app.clone(),
        init_cwd: app,
        package_dir: tmp.path().join("pkg"),
        exec_argv: Vec::new(),
        host_cpus: 4,
        node_version: "v22.18.0".into(),
    }
}

/// `input` with these environment variables.
pub(crate) fn input_env(tmp: &TempDir, options: Value, env: &[(&str, &str)]) -> OptionsInput {
    let mut i = input(tmp, options);
    i.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    i
}

pub(crate) fn parse_ok(input: OptionsInput) -> Options {
    match parse(input) {
        Ok(o) => o,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

pub(crate) fn parse_err(input: OptionsInput) -> String {
    match parse(input) {
        Ok(o) => panic!("expected an error, got {:?}", o.raw),
        Err(e) => e.to_string(),
    }
}

/// An environment of `pairs`, as the options read it.
pub(crate) fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
