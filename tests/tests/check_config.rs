//! The two config checks operators run before a restart (and the systemd
//! unit runs before each start): `context-host check-config` for the
//! server's keys and `context-analytics-admin check-config` for the
//! plugin's. A good file is summarised; a bad one fails naming the key and
//! what is allowed.

use std::{process::Command, time::Duration};

use context_e2e::{Scratch, artifact, run_context_host};

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"
data_dir = "data"
instance_id = "check-1"

[plugins]
dir = "plugins"

[plugins.analytics]
enabled = true

[plugins.analytics.config.storage]
url = "postgres://analytics@db.internal:5432/analytics"

[plugins.analytics.config.privacy]
user_ids = "hashed"

[[projects]]
name = "sample"
path = "src"
"#;

fn write(scratch: &Scratch, name: &str, text: &str) -> String {
    let path = scratch.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn admin(file: &str, secret: Option<&str>) -> (bool, String, String) {
    let mut command = Command::new(artifact("context-analytics-admin"));
    command.args(["check-config", file]).env_remove("CONTEXT_ANALYTICS_HASH_SECRET");
    if let Some(secret) = secret {
        command.env("CONTEXT_ANALYTICS_HASH_SECRET", secret);
    }
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn host_check_config_summarises_or_names_the_bad_key() {
    let scratch = Scratch::new("check-host");
    let good = write(&scratch, "good.toml", GOOD);
    let run = run_context_host(&["check-config", &good], Duration::from_secs(20));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let base = scratch.path().display();
    assert_eq!(
        run.stdout,
        format!(
            "listen: 127.0.0.1:8080\ndata dir: {base}/data\ninstance id: check-1\nplugins dir: {base}/plugins\n\
             plugin analytics: enabled, 2 config key(s)\nproject sample: {base}/src\n"
        )
    );
    let bad = write(&scratch, "bad.toml", &GOOD.replace("enabled = true", "enable = true"));
    let run = run_context_host(&["check-config", &bad], Duration::from_secs(20));
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("unknown key 'plugins.analytics.enable' (expected 'enabled' or 'config')"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&format!("invalid config file '{bad}'")), "{}", run.stderr);
}

#[test]
fn plugin_check_config_checks_as_the_plugin_does_at_load() {
    let scratch = Scratch::new("check-plugin-config");
    let good = write(&scratch, "good.toml", GOOD);
    let (ok, stdout, stderr) = admin(&good, Some("a-secret-of-32-bytes-for-hashing"));
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout,
        "plugin analytics: enabled\n\
         storage: PostgreSQL postgres://analytics@db.internal:5432/analytics (timescaledb: Auto)\n\
         retention: raw 7 d, minute 7 d, hourly 90 d, daily 365 d, compress after 3 d\n\
         privacy: user ids Hashed, queries Full\n\
         auth: open (no tokens)\n"
    );
    // Hashing without its secret in the environment: refused at load.
    let (ok, _, stderr) = admin(&good, None);
    assert!(!ok);
    assert!(
        stderr.contains("privacy hashing needs a secret of at least 16 bytes in the environment variable 'CONTEXT_ANALYTICS_HASH_SECRET'"),
        "{stderr}"
    );
    // An unknown key, named with the accepted ones (no misleading line
    // number: the parser sees the re-serialised table, not the file).
    let bad = write(&scratch, "bad.toml", &GOOD.replace("user_ids = \"hashed\"", "user_id = \"hashed\""));
    let (ok, _, stderr) = admin(&bad, Some("a-secret-of-32-bytes-for-hashing"));
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "error: {bad}: invalid [plugins.analytics.config]: unknown field `user_id`, expected one of `user_ids`, `queries`, `hash_secret_env`"
        )),
        "{stderr}"
    );
    // A bad value and a bad URL.
    let bad =
        write(&scratch, "url.toml", &GOOD.replace("postgres://analytics@db.internal", "mysql://db.internal"));
    let (ok, _, stderr) = admin(&bad, Some("a-secret-of-32-bytes-for-hashing"));
    assert!(!ok);
    assert!(
        stderr.contains("unknown scheme (expected sqlite://PATH or postgres://USER@HOST:PORT/DATABASE)"),
        "{stderr}"
    );
    let (ok, _, stderr) = admin(&write(&scratch, "none.toml", "[server]\nlisten = \"127.0.0.1:1\"\n"), None);
    assert!(!ok);
    assert!(stderr.contains("has no [plugins.analytics] section"), "{stderr}");
}
