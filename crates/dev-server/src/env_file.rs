//! `.env.local` then `.env`, as the seed tells people to configure: `KEY=value`
//! lines, `#` comments, optional `export `, optional quotes. The real environment
//! always wins, and `.env.local` wins over `.env`.

use std::path::Path;

/// Load the files that exist (in order) into the process environment, without
/// overriding anything already set. Returns the names of the files loaded.
pub fn load(dir: &Path) -> Vec<String> {
    let mut loaded = Vec::new();
    for name in [".env.local", ".env"] {
        let Ok(text) = std::fs::read_to_string(dir.join(name)) else {
            continue;
        };
        for (k, v) in parse(&text) {
            if std::env::var_os(&k).is_none() {
                // SAFETY: called at start-up, before any other thread reads the environment.
                unsafe { std::env::set_var(k, v) };
            }
        }
        loaded.push(name.to_string());
    }
    loaded
}

pub fn parse(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let k = k.trim();
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return None;
            }
            let v = v.trim();
            let v = if v.len() >= 2
                && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
            {
                &v[1..v.len() - 1]
            } else {
                // Unquoted: a trailing ` # comment` is not part of the value.
                v.split(" #").next().unwrap_or(v).trim()
            };
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_common_forms() {
        let got = super::parse("# c\nA=1\nexport B = \"two words\"\nC='x#y'\nD=v # note\nbad line\n=x\n");
        let want = [("A", "1"), ("B", "two words"), ("C", "x#y"), ("D", "v")];
        assert_eq!(
            got,
            want.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        );
    }
}
