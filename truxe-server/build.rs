// Embedded migrations are read at compile time; rebuild when their SQL changes.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
