//! `context-host gen-corpus`: a deterministic corpus of source-like files
//! (Rust, Python, TypeScript, Go, Java, Markdown, TOML) built from a shared
//! vocabulary with Zipf-distributed identifiers, plus in every project the
//! files an indexer must leave out for real reasons: a binary, a file over
//! the size limit (sparse, so it costs no disk), invalid UTF-8 and a
//! dangling symlink. Generated corpora are never committed.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

use super::random::{Rng, Zipf};

/// Written at the corpus root: marks a folder `loadgen --edit-corpus` may
/// change files in.
pub const MARKER: &str = ".context-corpus";

const WORDS: &[&str] = &[
    "search",
    "index",
    "query",
    "result",
    "cache",
    "config",
    "project",
    "file",
    "path",
    "token",
    "term",
    "score",
    "rank",
    "match",
    "buffer",
    "reader",
    "writer",
    "stream",
    "parse",
    "format",
    "render",
    "load",
    "store",
    "fetch",
    "update",
    "delete",
    "insert",
    "merge",
    "split",
    "join",
    "filter",
    "sort",
    "group",
    "count",
    "limit",
    "offset",
    "page",
    "cursor",
    "batch",
    "queue",
    "worker",
    "task",
    "job",
    "event",
    "handler",
    "router",
    "request",
    "response",
    "header",
    "body",
    "status",
    "error",
    "retry",
    "timeout",
    "deadline",
    "client",
    "server",
    "session",
    "user",
    "account",
    "auth",
    "secret",
    "key",
    "value",
    "entry",
    "node",
    "tree",
    "graph",
    "edge",
    "vertex",
    "list",
    "map",
    "set",
    "table",
    "row",
    "column",
    "schema",
    "record",
    "field",
    "type",
    "kind",
    "mode",
    "state",
    "flag",
    "option",
    "default",
    "build",
    "compile",
    "link",
    "module",
    "package",
    "crate",
    "import",
    "export",
    "symbol",
    "scope",
    "context",
    "runtime",
    "thread",
    "lock",
    "mutex",
    "channel",
    "signal",
    "metric",
    "counter",
    "gauge",
    "histogram",
    "latency",
    "duration",
    "interval",
    "window",
    "snapshot",
    "version",
    "release",
    "plugin",
    "hook",
    "registry",
    "loader",
    "manifest",
    "layout",
    "frame",
    "chunk",
    "block",
    "segment",
    "spool",
    "replay",
    "commit",
    "rollback",
    "migrate",
    "backup",
    "restore",
    "encode",
    "decode",
    "hash",
    "digest",
    "sign",
    "verify",
    "check",
    "validate",
    "normalize",
    "resolve",
    "lookup",
    "visit",
    "walk",
    "scan",
    "probe",
    "sample",
    "trace",
    "span",
    "log",
    "level",
    "debug",
    "info",
    "warn",
    "alert",
    "notify",
    "email",
    "webhook",
    "slack",
    "template",
    "theme",
    "color",
    "font",
    "image",
    "icon",
    "menu",
    "panel",
    "view",
    "model",
    "controller",
    "service",
    "repository",
    "factory",
    "builder",
    "adapter",
    "proxy",
    "bridge",
    "guard",
    "policy",
    "rule",
    "quota",
    "budget",
    "cost",
    "price",
    "order",
    "invoice",
    "payment",
    "customer",
    "tenant",
    "region",
    "zone",
    "cluster",
    "shard",
    "replica",
    "leader",
    "follower",
    "vote",
    "term_id",
    "epoch",
    "clock",
    "timer",
    "tick",
    "delay",
    "backoff",
    "jitter",
    "pool",
    "socket",
    "port",
    "address",
    "host",
    "domain",
    "route",
    "prefix",
    "suffix",
    "pattern",
    "regex",
    "glob",
    "wildcard",
];

const TYPES: &[&str] = &["u32", "u64", "i64", "f64", "bool", "String", "Vec<u8>", "usize", "Duration"];

/// Every identifier the corpus uses, most frequent first.
struct Vocabulary {
    snake: Vec<String>,
    camel: Vec<String>,
    zipf: Zipf,
}

impl Vocabulary {
    fn new(rng: &mut Rng, size: usize) -> Self {
        let word_zipf = Zipf::new(WORDS.len(), 0.9);
        let mut snake = Vec::with_capacity(size);
        let mut seen = std::collections::HashSet::new();
        while snake.len() < size {
            let parts = 1 + rng.below(3);
            let words: Vec<&str> = (0..parts).map(|_| WORDS[word_zipf.sample(rng)]).collect();
            let name = words.join("_");
            if seen.insert(name.clone()) {
                snake.push(name);
            }
        }
        let camel = snake.iter().map(|s| camel_case(s)).collect();
        Self { zipf: Zipf::new(size, 1.05), snake, camel }
    }

    fn ident(&self, rng: &mut Rng) -> &str {
        &self.snake[self.zipf.sample(rng)]
    }

    fn type_name(&self, rng: &mut Rng) -> &str {
        &self.camel[self.zipf.sample(rng)]
    }

    fn sentence(&self, rng: &mut Rng, words: usize) -> String {
        let mut out = String::new();
        for i in 0..words {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(WORDS[rng.below(WORDS.len())]);
        }
        out
    }
}

fn camel_case(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// What `gen-corpus` made.
#[derive(Debug)]
pub struct Corpus {
    pub root: PathBuf,
    /// (project name, folder).
    pub projects: Vec<(String, PathBuf)>,
    pub files: usize,
    pub bytes: u64,
}

impl Corpus {
    /// `[[projects]]` sections for a host config.
    pub fn projects_toml(&self) -> String {
        let mut out = String::new();
        for (name, path) in &self.projects {
            let _ = writeln!(out, "[[projects]]\nname = \"{name}\"\npath = \"{}\"\n", path.display());
        }
        out
    }
}

/// Writes `files` source-like files split over `projects` folders
/// (`gen-00`, `gen-01`…) under `root`, plus four files per project that the
/// indexer must leave out. `root` must be empty, absent, or an earlier
/// corpus (which is replaced).
pub fn generate(
    root: &Path,
    files: usize,
    projects: usize,
    seed: u64,
    max_file_bytes: u64,
) -> anyhow::Result<Corpus> {
    if projects == 0 || files < projects {
        bail!("need at least one file per project (got {files} files for {projects} projects)");
    }
    if root.exists() {
        let empty = fs::read_dir(root)?.next().is_none();
        if !empty && !root.join(MARKER).exists() {
            bail!(
                "'{}' is not empty and holds no generated corpus ({MARKER}): refusing to replace it",
                root.display()
            );
        }
        fs::remove_dir_all(root).with_context(|| format!("cannot clear '{}'", root.display()))?;
    }
    fs::create_dir_all(root).with_context(|| format!("cannot create '{}'", root.display()))?;
    // Absolute: a host config resolves relative paths from its own folder.
    let root = &fs::canonicalize(root)?;
    fs::write(
        root.join(MARKER),
        format!(
            "generated by context-host gen-corpus (seed {seed}); loadgen --edit-corpus may change files here\n"
        ),
    )?;
    let mut rng = Rng::new(seed);
    let vocabulary = Vocabulary::new(&mut rng, 4000);
    let modules: Vec<String> = (0..40).map(|_| vocabulary.ident(&mut rng).to_owned()).collect();
    let mut corpus = Corpus { root: root.to_owned(), projects: Vec::new(), files: 0, bytes: 0 };
    for p in 0..projects {
        let name = format!("gen-{p:02}");
        let dir = root.join(&name);
        let count = files / projects + usize::from(p < files % projects);
        for i in 0..count {
            let (ext, text) = source_file(&vocabulary, &mut rng);
            let module = rng.pick(&modules);
            let file_name = format!("{}_{i}.{ext}", vocabulary.ident(&mut rng));
            let folder = match ext {
                "md" => "docs".to_owned(),
                "toml" => "config".to_owned(),
                _ => format!("src/{module}"),
            };
            write(&dir.join(folder).join(file_name), text.as_bytes())?;
            corpus.files += 1;
            corpus.bytes += text.len() as u64;
        }
        left_out_files(&dir, max_file_bytes)?;
        corpus.projects.push((name, dir));
    }
    Ok(corpus)
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    fs::create_dir_all(path.parent().expect("a file has a folder"))?;
    fs::write(path, bytes).with_context(|| format!("cannot write '{}'", path.display()))
}

/// The four files every project has that the indexer leaves out.
fn left_out_files(dir: &Path, max_file_bytes: u64) -> anyhow::Result<()> {
    write(&dir.join("assets/logo.png"), b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10")?;
    write(&dir.join("docs/legacy-latin1.txt"), b"caf\xe9 cr\xe8me br\xfbl\xe9e\n")?;
    let big = dir.join("dumps/trace.log");
    fs::create_dir_all(big.parent().expect("folder"))?;
    fs::File::create(&big)?.set_len(max_file_bytes + 1)?;
    #[cfg(unix)]
    std::os::unix::fs::symlink("../../removed/module.rs", dir.join("src/broken_link.rs"))
        .or_else(|e| if e.kind() == std::io::ErrorKind::AlreadyExists { Ok(()) } else { Err(e) })?;
    Ok(())
}

/// One file: extension and text, 1 to ~24 KB, most around 3-6 KB.
fn source_file(v: &Vocabulary, rng: &mut Rng) -> (&'static str, String) {
    let ext = match rng.below(100) {
        0..=34 => "rs",
        35..=54 => "py",
        55..=69 => "ts",
        70..=79 => "go",
        80..=84 => "java",
        85..=94 => "md",
        _ => "toml",
    };
    let target = 1000 + (rng.unit().powi(3) * 23_000.0) as usize + rng.below(3000);
    let mut out = String::with_capacity(target + 512);
    while out.len() < target {
        match ext {
            "rs" => rust_item(v, rng, &mut out),
            "py" => python_item(v, rng, &mut out),
            "ts" => ts_item(v, rng, &mut out),
            "go" => go_item(v, rng, &mut out),
            "java" => java_item(v, rng, &mut out),
            "md" => markdown_item(v, rng, &mut out),
            _ => toml_item(v, rng, &mut out),
        }
    }
    (ext, out)
}

fn rust_item(v: &Vocabulary, rng: &mut Rng, out: &mut String) {
    let ty = v.type_name(rng).to_owned();
    let words = 6 + rng.below(6);
    let _ = writeln!(out, "/// {}.", v.sentence(rng, words));
    let _ = writeln!(out, "pub struct {ty} {{");
    for _ in 0..1 + rng.below(4) {
        let _ = writeln!(out, "    pub {}: {},", v.ident(rng), rng.pick(TYPES));
    }
    let _ = writeln!(out, "}}\n\nimpl {ty} {{");
    for _ in 0..1 + rng.below(3) {
        let (f, a, b) = (v.ident(rng), v.ident(rng), v.ident(rng));
        let _ = writeln!(
            out,
            "    pub fn {f}(&self, {a}: {}) -> Result<{}, Error> {{",
            rng.pick(TYPES),
            rng.pick(TYPES)
        );
        let _ = writeln!(out, "        let {b} = self.{}.{}({a})?;", v.ident(rng), v.ident(rng));
        let _ = writeln!(
            out,
            "        if {b} > {} {{\n            return Err(Error::{});\n        }}",
            rng.below(1000),
            v.type_name(rng)
        );
        let _ = writeln!(out, "        Ok({}::{}({b}))\n    }}", v.type_name(rng), v.ident(rng));
    }
    out.push_str("}\n\n");
}

fn python_item(v: &Vocabulary, rng: &mut Rng, out: &mut String) {
    let _ = writeln!(out, "class {}:\n    \"\"\"{}.\"\"\"\n", v.type_name(rng), v.sentence(rng, 8));
    for _ in 0..1 + rng.below(3) {
        let (f, a, b) = (v.ident(rng), v.ident(rng), v.ident(rng));
        let _ = writeln!(out, "    def {f}(self, {a}, {b}=None):");
        let _ = writeln!(out, "        # {}", v.sentence(rng, 5));
        let _ = writeln!(out, "        {b} = self.{}({a})", v.ident(rng));
        let _ = writeln!(
            out,
            "        if {b} is None:\n            raise {}Error(\"{}\")",
            v.type_name(rng),
            v.ident(rng)
        );
        let _ = writeln!(out, "        return {b}.{}()\n", v.ident(rng));
    }
}

fn ts_item(v: &Vocabulary, rng: &mut Rng, out: &mut String) {
    let ty = v.type_name(rng).to_owned();
    let _ = writeln!(out, "export interface {ty} {{");
    for _ in 0..1 + rng.below(4) {
        let _ = writeln!(out, "  {}: {};", v.ident(rng), rng.pick(&["string", "number", "boolean", "Date"]));
    }
    let (f, a) = (v.ident(rng), v.ident(rng));
    let _ = writeln!(out, "}}\n\nexport async function {f}({a}: {ty}): Promise<{}> {{", v.type_name(rng));
    let _ = writeln!(out, "  const {} = await {}.{}({a});", v.ident(rng), v.ident(rng), v.ident(rng));
    let _ = writeln!(out, "  // {}\n  return {}({a});\n}}\n", v.sentence(rng, 6), v.ident(rng));
}

fn go_item(v: &Vocabulary, rng: &mut Rng, out: &mut String) {
    let ty = v.type_name(rng).to_owned();
    let _ = writeln!(out, "// {ty} {}.\ntype {ty} struct {{", v.sentence(rng, 7));
    for _ in 0..1 + rng.below(4) {
        let _ = writeln!(out, "\t{} {}", v.type_name(rng), rng.pick(&["string", "int64", "bool", "[]byte"]));
    }
    let (f, a) = (v.type_name(rng), v.ident(rng));
    let _ = writeln!(out, "}}\n\nfunc (s *{ty}) {f}({a} string) error {{");
    let _ = writeln!(out, "\tif err := s.{}({a}); err != nil {{\n\t\treturn err\n\t}}", v.type_name(rng));
    let _ = writeln!(out, "\treturn nil\n}}\n");
}

fn java_item(v: &Vocabulary, rng: &mut Rng, out: &mut String) {
    let ty = v.type_name(rng).to_owned();
    let _ = writeln!(out, "/** {}. */\npublic class {ty} {{", v.sentence(rng, 8));
    let (f, a) = (v.ident(rng), v.ident(rng));
    let _ = writeln!(out, "    private final {} {};", v.type_name(rng), v.ident(rng));
    let _ = writeln!(out, "    public {} {f}({} {a}) {{", v.type_name(rng), v.type_name(rng));
    let _ = writeln!(out, "        return this.{}.{}({a});\n    }}\n}}\n", v.ident(rng), v.ident(rng));
}

fn markdown_item(v: &Vocabulary, rng: &mut Rng, out: &mut String) {
    let _ = writeln!(out, "## {}\n", v.type_name(rng));
    let _ = writeln!(
        out,
        "{}. Use `{}()` to {} the {}.\n",
        v.sentence(rng, 12),
        v.ident(rng),
        v.ident(rng),
        v.ident(rng)
    );
}

fn toml_item(v: &Vocabulary, rng: &mut Rng, out: &mut String) {
    let _ = writeln!(out, "[{}]", v.ident(rng));
    for _ in 0..2 + rng.below(4) {
        let _ = writeln!(out, "{} = \"{}\"", v.ident(rng), v.ident(rng));
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_writes_the_same_corpus() {
        let base = std::env::temp_dir().join(format!("context-corpus-{}", std::process::id()));
        let a = generate(&base.join("a"), 30, 2, 5, 4096).unwrap();
        let b = generate(&base.join("b"), 30, 2, 5, 4096).unwrap();
        assert_eq!((a.files, a.bytes), (b.files, b.bytes));
        assert_eq!(a.projects.len(), 2);
        assert!(a.projects[0].1.is_absolute(), "a host config resolves relative paths from its folder");
        let read = |c: &Corpus| fs::read_to_string(c.projects[1].1.join("docs/legacy-latin1.txt")).is_err();
        assert!(read(&a), "invalid UTF-8 on purpose");
        assert_eq!(fs::metadata(a.projects[0].1.join("dumps/trace.log")).unwrap().len(), 4097);
        assert!(a.projects_toml().contains("name = \"gen-01\""));
        // An earlier corpus is replaced; a folder with other content is not.
        generate(&base.join("a"), 4, 1, 5, 4096).unwrap();
        fs::create_dir_all(base.join("c")).unwrap();
        fs::write(base.join("c/precious.txt"), "keep").unwrap();
        assert!(generate(&base.join("c"), 4, 1, 5, 4096).is_err());
        let _ = fs::remove_dir_all(base);
    }
}
