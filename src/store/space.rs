//! Free space on the data disk. sled can leave its files damaged when a write fails for lack of
//! space: the fault suite found a node whose disk had filled up unable to open its storage ever
//! after ("Read corrupted data"), even once the space was back. So a node never opens its
//! storage on a nearly full disk, and stops by itself, before its next write fails half-done,
//! when the disk gets nearly full while it runs. A supervisor restarts it; it starts again once
//! there is room.

use std::path::Path;

/// The space a node keeps free on its data disk: room for sled to recover and write a
/// snapshot, and for the writes in flight when the disk fills.
pub const MIN_FREE_BYTES: u64 = 16 * 1024 * 1024;

/// How often a running node looks.
pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// `Err` with what to tell the operator when the disk holding `dir` has less than
/// [`MIN_FREE_BYTES`] free.
pub fn check(dir: &Path) -> Result<(), String> {
    let free = fs2::available_space(dir)
        .map_err(|e| format!("cannot tell the free space of {}: {e}", dir.display()))?;
    if free < MIN_FREE_BYTES {
        return Err(format!(
            "the disk holding {} has {} KiB free; a node needs {} MiB free to write safely: free some space (the node starts again once there is room)",
            dir.display(),
            free / 1024,
            MIN_FREE_BYTES >> 20
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_normal_disk_has_room() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The test machine's temporary directory has more than 16 MiB free.
        assert_eq!(check(dir.path()), Ok(()));
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_panic() {
        let err = check(Path::new("/nonexistent/switchyard")).expect_err("no such dir");
        assert!(err.contains("cannot tell the free space"), "{err}");
    }
}
