//! Opening a redb file the host keeps (the KV store, the task journal) so
//! that a damaged file is a clear error: redb asserts on some truncations
//! (a panic with a backtrace), and treats an empty file as a new database
//! (the data silently gone).

use redb::Database;
use std::cell::RefCell;
use std::path::Path;
use std::sync::Once;

thread_local! {
    /// Set while this thread runs [`quietly`]: the panic's message, kept
    /// instead of printed.
    static CAUGHT: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

/// Runs `f`, turning a panic into its message, printed by no one.
fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let kept = CAUGHT.with(|c| {
                let mut c = c.borrow_mut();
                match c.as_mut() {
                    Some(slot) => {
                        *slot = Some(info.to_string());
                        true
                    }
                    None => false,
                }
            });
            if !kept {
                previous(info);
            }
        }));
    });
    CAUGHT.with(|c| *c.borrow_mut() = Some(None));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let message = CAUGHT.with(|c| c.borrow_mut().take()).flatten();
    result.map_err(|_| message.unwrap_or_else(|| "redb panicked".into()))
}

/// Opens (or creates) the redb file at `path`, holding `what` (for the
/// messages), with a page cache of at most `cache_bytes` (redb's default
/// is 1 GiB, which a host's memory budget cannot give each file). A file
/// that exists but is empty, or that redb cannot read, is refused with
/// what to do about it.
pub fn open_database(path: &Path, what: &str, cache_bytes: usize) -> Result<Database, String> {
    let damaged = |reason: &str| {
        format!(
            "{what} {} is damaged ({reason}); restore it from a backup, or move it away to start with an empty one",
            path.display()
        )
    };
    if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        return Err(damaged("the file is empty"));
    }
    match quietly(|| Database::builder().set_cache_size(cache_bytes).create(path)) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::Storage(e))) => Err(damaged(&e.to_string())),
        Ok(Err(e)) => Err(format!("cannot open {what} {}: {e}", path.display())),
        Err(panic) => Err(damaged(panic.split_once(":\n").map_or(panic.as_str(), |(_, m)| m).trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::TableDefinition;

    const T: TableDefinition<u64, &[u8]> = TableDefinition::new("t");

    fn written(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("data.redb");
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(T).unwrap().insert(1, [7u8; 100_000].as_slice()).unwrap();
        tx.commit().unwrap();
        path
    }

    #[test]
    fn an_empty_or_truncated_file_is_refused_by_name_without_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path());
        let len = std::fs::metadata(&path).unwrap().len();
        for cut in [0, 100, 4096, len / 2, len - 1] {
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(cut).unwrap();
            drop(file);
            let e = open_database(&path, "the task journal", 1 << 20)
                .err()
                .unwrap_or_else(|| panic!("cut at {cut} opened"));
            assert!(e.starts_with(&format!("the task journal {} is damaged (", path.display())), "{e}");
            assert!(e.ends_with("move it away to start with an empty one"), "{e}");
            if cut == 0 {
                assert!(e.contains("the file is empty"), "{e}");
            }
        }
        // The hook passes other panics on; a sound file opens.
        std::fs::remove_file(&path).unwrap();
        assert!(open_database(&written(dir.path()), "x", 1 << 20).is_ok());
    }
}
