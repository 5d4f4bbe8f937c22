//! Free space on the data disk. sled can leave its files damaged when a write fails for lack of
//! space: the fault suite found a node whose disk had filled up unable to open its storage ever
//! after ("Read corrupted data"), even once the space was back. So a node never opens its
//! storage on a nearly full disk, and stops by itself, before its next write fails half-done,
//! when the disk gets nearly full while it runs. A supervisor restarts it; it starts again once
//! there is room.

use std::path::Path;

/// The space a node keeps free on its data disk: room for the largest write it may take at
/// once (a 64 MiB peer message, and a snapshot of up to the 16 MiB catalog with its registry)
/// and for sled to recover.
pub const MIN_FREE_BYTES: u64 = 96 * 1024 * 1024;

/// How often a running node looks.
pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// `Err` with what to tell the operator when the disk holding `dir` has less than
/// [`MIN_FREE_BYTES`] free, or its free space cannot be read.
pub fn check(dir: &Path) -> Result<(), String> {
    let free = fs2::available_space(dir)
        .map_err(|e| format!("cannot tell the free space of {}: {e}", dir.display()))?;
    too_little(dir, free)
}

/// `Err` with what to tell the operator when `free` bytes on the disk holding `dir` is too
/// little.
pub fn too_little(dir: &Path, free: u64) -> Result<(), String> {
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
        // The test machine's temporary directory has more than 96 MiB free.
        assert_eq!(check(dir.path()), Ok(()));
        let err = too_little(dir.path(), 1024 * 1024).expect_err("1 MiB is too little");
        assert!(err.contains("1024 KiB free"), "{err}");
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_panic() {
        let err = check(Path::new("/nonexistent/switchyard")).expect_err("no such dir");
        assert!(err.contains("cannot tell the free space"), "{err}");
    }
}
