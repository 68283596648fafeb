//! CPU work over many independent items spread over the cores: decoding
//! the catalog entries and stream configs a first `list_streams` reads
//! (10,000 streams: about 40 ms on one core).

use std::num::NonZeroUsize;

/// Below this many items the work stays on the calling thread (a thread
/// costs tens of microseconds to start).
const MIN_ITEMS: usize = 1024;

/// `f` of every item, in order: one chunk on the calling thread and one on
/// a scoped thread per other core when there are many items. A thread that
/// cannot be started leaves its chunk to the calling thread.
pub(crate) fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    if cores < 2 || items.len() < MIN_ITEMS {
        return items.iter().map(f).collect();
    }
    let f = &f;
    let mut chunks = items.chunks(items.len().div_ceil(cores));
    let first = chunks.next().unwrap_or_default();
    std::thread::scope(|scope| {
        let others: Vec<_> = chunks
            .map(|chunk| {
                let spawned = std::thread::Builder::new()
                    .name("durabus-decode".into())
                    .spawn_scoped(scope, move || chunk.iter().map(f).collect::<Vec<R>>());
                (chunk, spawned.ok())
            })
            .collect();
        let mut out: Vec<R> = Vec::with_capacity(items.len());
        out.extend(first.iter().map(f));
        for (chunk, thread) in others {
            match thread.map(std::thread::ScopedJoinHandle::join) {
                Some(Ok(done)) => out.extend(done),
                Some(Err(panic)) => std::panic::resume_unwind(panic),
                None => out.extend(chunk.iter().map(f)),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_order_of_the_items_whatever_their_number() {
        for n in [0, 1, MIN_ITEMS - 1, MIN_ITEMS, 10_007] {
            let items: Vec<usize> = (0..n).collect();
            let doubled = map(&items, |i| i * 2);
            assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        }
    }
}
