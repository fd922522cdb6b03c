//! `.env.local` then `.env`, as the seed tells people to configure, parsed by
//! `dotenvy`. Nothing is written to the process environment (no `set_var` once the
//! runtime's threads exist): the files become variables for `Config::from_vars`,
//! behind the real environment.

use std::collections::HashMap;
use std::path::Path;

/// Variables from the env files in `dir`, and the names of the files read.
#[derive(Debug, Default)]
pub struct EnvFiles {
    vars: HashMap<String, String>,
    pub loaded: Vec<String>,
}

impl EnvFiles {
    /// Read `.env.local` and `.env` (those that exist); `.env.local` wins.
    pub fn load(dir: &Path) -> Result<EnvFiles, String> {
        let mut files = EnvFiles::default();
        for name in [".env.local", ".env"] {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            for item in dotenvy::from_path_iter(&path).map_err(|e| format!("{name}: {e}"))? {
                let (k, v) = item.map_err(|e| format!("{name}: {e}"))?;
                files.vars.entry(k).or_insert(v);
            }
            files.loaded.push(name.to_string());
        }
        Ok(files)
    }

    /// Every variable: the files', overridden by the process environment's.
    pub fn vars(&self) -> HashMap<String, String> {
        let mut all = self.vars.clone();
        all.extend(std::env::vars());
        all
    }

    /// A variable: the process environment first, then the files.
    pub fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().or_else(|| self.vars.get(key).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_wins_over_env_and_the_process_environment_wins_over_both() {
        let dir = std::env::temp_dir().join(format!("env-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".env"), "# c\nA=from-env\nexport B=\"two words\"\nPATH=nope\n").unwrap();
        std::fs::write(dir.join(".env.local"), "A=from-local\nC='x#y'\n").unwrap();
        let f = EnvFiles::load(&dir).unwrap();
        assert_eq!(f.loaded, [".env.local", ".env"]);
        assert_eq!(f.get("A").as_deref(), Some("from-local"));
        assert_eq!(f.get("B").as_deref(), Some("two words"));
        assert_eq!(f.get("C").as_deref(), Some("x#y"));
        assert_ne!(f.get("PATH").as_deref(), Some("nope"), "the real environment wins");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
