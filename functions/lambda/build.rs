//! Bundles the relay's config into the functions and validates it: a bad config fails the
//! build, never the first event. `RELAY_CONFIG` picks another file than `config/relay.yaml`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=RELAY_CONFIG");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let path = match std::env::var("RELAY_CONFIG") {
        Ok(p) if !p.trim().is_empty() => PathBuf::from(p.trim()),
        _ => manifest.join("../../config/relay.yaml"),
    };
    println!("cargo:rerun-if-changed={}", path.display());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => fail(&format!(
            "cannot read the relay config {}: {e}",
            path.display()
        )),
    };
    if let Err(e) = relay_shared::rules::config::Config::parse(&text, &path.display().to_string()) {
        fail(&e.to_string());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("relay.yaml");
    if let Err(e) = std::fs::write(&out, text) {
        fail(&format!("cannot write {}: {e}", out.display()));
    }
}

fn fail(message: &str) -> ! {
    for line in message.lines() {
        println!("cargo:warning={line}");
    }
    eprintln!("{message}");
    std::process::exit(1);
}
