//! Embeds the web UI into the binary: our own files from ui/src and xterm.js from the
//! npm packages pinned by ui/package-lock.json (installed here with `npm ci` when
//! missing), so the UI works offline and nothing is loaded from a CDN.

use std::path::{Path, PathBuf};
use std::process::Command;

const NPM_FILES: &[(&str, &str)] = &[
    ("xterm.js", "node_modules/@xterm/xterm/lib/xterm.js"),
    ("xterm.css", "node_modules/@xterm/xterm/css/xterm.css"),
    ("addon-fit.js", "node_modules/@xterm/addon-fit/lib/addon-fit.js"),
];

fn content_type(name: &str) -> &'static str {
    match Path::new(name).extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let ui = manifest.join("ui");
    println!("cargo:rerun-if-changed=ui/src");
    println!("cargo:rerun-if-changed=ui/package-lock.json");
    for (_, path) in NPM_FILES {
        println!("cargo:rerun-if-changed=ui/{path}");
    }
    if NPM_FILES.iter().any(|(_, path)| !ui.join(path).is_file()) {
        let status =
            Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&ui).status().unwrap_or_else(|e| {
                panic!("the web UI needs its npm packages and npm could not run ({e}); install Node.js")
            });
        assert!(status.success(), "`npm ci` in ui/ failed");
    }
    let mut assets: Vec<(String, PathBuf)> =
        NPM_FILES.iter().map(|(name, path)| (name.to_string(), ui.join(path))).collect();
    let mut own: Vec<PathBuf> = std::fs::read_dir(ui.join("src")).unwrap().map(|e| e.unwrap().path()).collect();
    own.sort();
    for path in own {
        assets.push((path.file_name().unwrap().to_string_lossy().into_owned(), path));
    }
    let mut code = String::from(
        "/// (file name, content type, bytes) of every UI asset.\npub static ASSETS: &[(&str, &str, &[u8])] = &[\n",
    );
    for (name, path) in &assets {
        code.push_str(&format!(
            "    ({name:?}, {:?}, include_bytes!({:?})),\n",
            content_type(name),
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("ui_assets.rs");
    std::fs::write(out, code).unwrap();
}
