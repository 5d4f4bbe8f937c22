//! The on-disk record: every value the store writes (log entries, vote, committed id, purge
//! mark, snapshot) is sealed with a format version and a CRC-32 of its bytes, so a damaged
//! record is found when read instead of being decoded into a wrong entry, and a node that finds
//! a format it does not know refuses to start instead of misreading it.
//!
//! Layout: `b"SY"`, the format version (one byte), the CRC-32 of the payload (4 bytes, little
//! endian), the payload. Values written before records were sealed (no `SY` prefix) are read
//! as they are, so a node upgraded in place keeps its data.

use std::io;

const MAGIC: &[u8; 2] = b"SY";
/// The record format this build writes. 2: leases carry their owner and a random id, and the
/// state holds authentication (tokens' hashes, certificate roles).
pub(crate) const FORMAT: u8 = 2;
const HEADER: usize = 2 + 1 + 4;

/// Seals `payload` into a record.
pub(crate) fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of a record read back, checked; `what` names it in the error.
pub(crate) fn unseal<'a>(record: &'a [u8], what: &dyn Fn() -> String) -> io::Result<&'a [u8]> {
    if record.len() < HEADER || &record[..2] != MAGIC {
        // Written before records were sealed.
        return Ok(record);
    }
    let format = record[2];
    if format != FORMAT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is in storage format {format}, which this version of Switchyard (format {FORMAT}) does not know: run the version that wrote it, or a newer one",
                what()
            ),
        ));
    }
    let stored = u32::from_le_bytes([record[3], record[4], record[5], record[6]]);
    let payload = &record[HEADER..];
    if crc32fast::hash(payload) != stored {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is damaged (its checksum does not match)", what()),
        ));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn what() -> String {
        "log entry 7".into()
    }

    #[test]
    fn a_sealed_record_opens_and_any_flipped_bit_is_found() {
        let payload = b"an entry of the raft log".to_vec();
        let record = seal(&payload);
        assert_eq!(unseal(&record, &what).unwrap(), payload.as_slice());
        for i in HEADER..record.len() {
            for bit in 0..8 {
                let mut damaged = record.clone();
                damaged[i] ^= 1 << bit;
                let err = unseal(&damaged, &what).unwrap_err();
                assert!(err.to_string().contains("log entry 7 is damaged"), "{err}");
            }
        }
    }

    #[test]
    fn an_unknown_format_is_refused_and_an_unsealed_value_passes() {
        let mut record = seal(b"x");
        record[2] = FORMAT + 1;
        let err = unseal(&record, &what).unwrap_err();
        assert!(err.to_string().contains("does not know"), "{err}");
        assert_eq!(unseal(b"legacy bytes", &what).unwrap(), b"legacy bytes");
    }
}
