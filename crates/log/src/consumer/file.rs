//! The consumer state file: its frame (magic, version, length, CRC32C)
//! around a JSON body.

use durabus_core::{ConsumerConfig, Error, Result, SequencePair};
use serde::{Deserialize, Serialize};

/// Magic of consumer state files.
pub(crate) const CONSUMER_MAGIC: &[u8; 8] = b"DBUSCON\0";

/// Consumer state file format version.
pub(crate) const CONSUMER_VERSION: u32 = 1;

/// One unacknowledged delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// Consumer sequence of its last delivery.
    pub(crate) cseq: u64,
    /// How many times it was delivered.
    pub(crate) count: u64,
    /// Unix ns when it is due for redelivery.
    pub(crate) deadline_ns: i64,
}

/// The body of a consumer state file (JSON inside the frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConsumerFile {
    pub(crate) name: String,
    pub(crate) config: ConsumerConfig,
    pub(crate) created_ns: i64,
    pub(crate) delivered: SequencePair,
    /// The ack floor, moved as nats-server moves it (see `Consumer::on_settled`).
    #[serde(default)]
    pub(crate) ack_floor: SequencePair,
    /// The next stream sequence to look at for new messages.
    pub(crate) next_seq: u64,
    /// `last_per_subject`: sequences still to deliver before `next_seq`.
    pub(crate) start_queue: Vec<u64>,
    /// stream seq -> pending delivery, in stream-seq order.
    pub(crate) pending: Vec<(u64, Pending)>,
    /// The generation of the journal that continues this state (its
    /// entries apply on top of it; an older journal is already in it).
    #[serde(default)]
    pub(crate) journal_gen: u64,
}

/// What decoding a consumer file found (never a panic).
#[derive(Debug)]
pub(crate) enum DecodedConsumer {
    Ok(Box<ConsumerFile>),
    Newer(u32),
    Corrupt(String),
}

impl ConsumerFile {
    /// Magic, version u32 LE, body length u32 LE, JSON body, CRC32C of all
    /// before it.
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let body = serde_json::to_vec(self)
            .map_err(|e| Error::internal(format!("encoding consumer state: {e}")))?;
        let len = u32::try_from(body.len())
            .map_err(|_| Error::internal("consumer state over 4 GiB".into()))?;
        let mut out = Vec::with_capacity(body.len() + 20);
        out.extend_from_slice(CONSUMER_MAGIC);
        out.extend_from_slice(&CONSUMER_VERSION.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    pub(crate) fn decode(b: &[u8]) -> DecodedConsumer {
        if b.len() < 20 {
            return DecodedConsumer::Corrupt(format!("{} bytes, shorter than a header", b.len()));
        }
        if &b[..8] != CONSUMER_MAGIC {
            return DecodedConsumer::Corrupt("bad magic".into());
        }
        let word = |at: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&b[at..at + 4]);
            u32::from_le_bytes(w)
        };
        let len = word(12) as usize;
        if b.len() != 20 + len {
            return DecodedConsumer::Corrupt(format!(
                "length field says {len} body bytes, the file holds {}",
                b.len() - 20
            ));
        }
        if crc32c::crc32c(&b[..16 + len]) != word(16 + len) {
            return DecodedConsumer::Corrupt("CRC mismatch".into());
        }
        let version = word(8);
        if version != CONSUMER_VERSION {
            return DecodedConsumer::Newer(version);
        }
        match serde_json::from_slice::<ConsumerFile>(&b[16..16 + len]) {
            Ok(f) => DecodedConsumer::Ok(Box::new(f)),
            Err(e) => DecodedConsumer::Corrupt(format!("state is not valid JSON: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_file_round_trips_and_every_bit_flip_is_reported() {
        let f = ConsumerFile {
            name: "c".into(),
            config: ConsumerConfig::durable("c").max_deliver(3),
            created_ns: 7,
            delivered: SequencePair {
                consumer_seq: 5,
                stream_seq: 4,
            },
            ack_floor: SequencePair {
                consumer_seq: 1,
                stream_seq: 1,
            },
            next_seq: 5,
            start_queue: vec![9],
            journal_gen: 0,
            pending: vec![(
                2,
                Pending {
                    cseq: 5,
                    count: 2,
                    deadline_ns: 11,
                },
            )],
        };
        let b = f.encode().unwrap();
        match ConsumerFile::decode(&b) {
            DecodedConsumer::Ok(g) => assert_eq!(*g, f),
            other => panic!("{other:?}"),
        }
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 1;
            assert!(
                !matches!(ConsumerFile::decode(&d), DecodedConsumer::Ok(_)),
                "flip at {i}"
            );
        }
        for n in 0..b.len() {
            assert!(matches!(
                ConsumerFile::decode(&b[..n]),
                DecodedConsumer::Corrupt(_)
            ));
        }
    }
}
