//! Embedded migrations are read at compile time; rebuild when their SQL changes. The `up.sql`
//! of every migration is also embedded as text (`$OUT_DIR/migration_sql.rs`), for `truxectl
//! migrate --dry-run`: diesel's embedded migrations run their SQL but do not expose it.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut code = String::new();
    for (constant, backend) in [("POSTGRES_UP_SQL", "postgres"), ("SQLITE_UP_SQL", "sqlite")] {
        let mut entries: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(root.join(backend))
            .unwrap_or_else(|e| panic!("cannot read migrations/{backend}: {e}"))
            .filter_map(Result::ok)
            .map(|entry| (entry.file_name().to_string_lossy().into_owned(), entry.path().join("up.sql")))
            .filter(|(_, up)| up.is_file())
            .collect();
        entries.sort();
        let _ = writeln!(code, "/// Every `migrations/{backend}/*/up.sql`, by directory name, in order.");
        let _ = writeln!(code, "pub const {constant}: &[(&str, &str)] = &[");
        for (name, up) in entries {
            let path = up.canonicalize().unwrap_or(up);
            let _ = writeln!(code, "    ({name:?}, include_str!({:?})),", path.display().to_string());
        }
        let _ = writeln!(code, "];");
    }
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(Path::new(&out).join("migration_sql.rs"), code).expect("write migration_sql.rs");
}
