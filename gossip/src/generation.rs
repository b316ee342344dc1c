//! A member's generation: a number that grows with every start, even when the wall
//! clock went backwards between two starts.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The file in the data directory that keeps the last generation used.
pub const GENERATION_FILE: &str = "gossip-generation";

/// Picks the generation for a start at `now`: milliseconds since the Unix epoch, or one
/// more than the generation stored in `data_dir` if that is larger, and stores it there.
/// Without a data directory the clock alone decides.
///
/// # Errors
///
/// When the data directory cannot be created, or the file in it cannot be read, parsed
/// or written.
pub fn next_generation(data_dir: Option<&Path>, now: SystemTime) -> io::Result<u64> {
    let clock = now
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let Some(dir) = data_dir else {
        return Ok(clock);
    };

    fs::create_dir_all(dir)?;
    let path = dir.join(GENERATION_FILE);
    let last = match fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().parse::<u64>().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} holds {:?}, not a generation number; delete the file to start over",
                    path.display(),
                    text.trim()
                ),
            )
        })?),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(error),
    };
    let generation = match last {
        Some(last) => clock.max(last.saturating_add(1)),
        None => clock,
    };

    let temporary = dir.join(format!("{GENERATION_FILE}.tmp"));
    fs::write(&temporary, format!("{generation}\n"))?;
    fs::rename(&temporary, &path)?;
    Ok(generation)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(millis)
    }

    #[test]
    fn follows_the_clock_when_it_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(next_generation(Some(dir.path()), at(1_000)).unwrap(), 1_000);
        assert_eq!(next_generation(Some(dir.path()), at(5_000)).unwrap(), 5_000);
    }

    #[test]
    fn grows_when_the_clock_went_backwards() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(next_generation(Some(dir.path()), at(9_000)).unwrap(), 9_000);
        assert_eq!(next_generation(Some(dir.path()), at(2_000)).unwrap(), 9_001);
        assert_eq!(next_generation(Some(dir.path()), at(2_000)).unwrap(), 9_002);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(GENERATION_FILE), "soon").unwrap();
        let error = next_generation(Some(dir.path()), at(1)).unwrap_err();
        assert!(error.to_string().contains("\"soon\""), "{error}");
    }

    #[test]
    fn without_data_dir_uses_the_clock() {
        assert_eq!(next_generation(None, at(42)).unwrap(), 42);
    }
}
