//! Build script: rebuild when the SQL migrations change (they are embedded in the
//! binary by `sqlx::migrate!`, which stable Rust cannot track by itself).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
