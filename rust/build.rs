//! Build facts the extension reports (`phasekit --version`): the enabled Cargo
//! features, the target triple and the compiler that built it.

use std::env;
use std::process::Command;

fn main() {
    let mut features: Vec<String> = env::vars()
        .filter_map(|(key, _)| {
            key.strip_prefix("CARGO_FEATURE_")
                .map(|name| name.to_lowercase().replace('_', "-"))
        })
        .filter(|name| name != "default")
        .collect();
    features.sort();
    println!(
        "cargo:rustc-env=PHASEKIT_BUILD_FEATURES={}",
        features.join(",")
    );
    println!(
        "cargo:rustc-env=PHASEKIT_BUILD_TARGET={}",
        env::var("TARGET").unwrap_or_default()
    );
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.trim().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=PHASEKIT_BUILD_RUSTC={version}");
    println!("cargo:rerun-if-changed=rust/build.rs");
}
