//! The console's files, embedded in the binary: one page, its style sheet and its script
//! (plain JavaScript, no build step).

const INDEX: &str = include_str!("assets/index.html");
const STYLE: &str = include_str!("assets/console.css");
const SCRIPT: &str = include_str!("assets/console.js");

/// The file at `path` and its content type.
pub(super) fn find(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/ui" | "/ui/" | "/ui/index.html" => Some((INDEX, "text/html; charset=utf-8")),
        "/ui/console.css" => Some((STYLE, "text/css; charset=utf-8")),
        "/ui/console.js" => Some((SCRIPT, "text/javascript; charset=utf-8")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_files_that_are_served() {
        for name in ["console.css", "console.js"] {
            assert!(INDEX.contains(name), "index.html should load {name}");
            assert!(find(&format!("/ui/{name}")).is_some());
        }
        assert!(find("/ui/../Cargo.toml").is_none());
        assert!(find("/ui/other.js").is_none());
    }
}
