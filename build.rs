//! Build script: rebuild when the SQL migrations change (they are embedded in the
//! binary by `sqlx::migrate!`, which stable Rust cannot track by itself), and when the
//! built dashboard changes (`ui/dist`, embedded by `rust-embed` in release builds: a
//! rebuilt dashboard has new hashed file names, which the compiler cannot know of).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    // Watching a path that does not exist would rerun this script on every build, so
    // until the dashboard is built, watch `ui` for `dist` to appear.
    if std::path::Path::new("ui/dist").exists() {
        println!("cargo:rerun-if-changed=ui/dist");
    } else {
        println!("cargo:rerun-if-changed=ui");
    }
}
