//! A trie of subscription filters by subject token, as nats-server's sublist:
//! matching a subject walks its tokens once (a literal child and a `*` child
//! per token, collecting `>` entries on the way) instead of testing every
//! filter, so routing costs the same with ten wildcard subscriptions or ten
//! thousand.

use crate::HashMap;

/// Entries (subscriptions) keyed by valid filters.
#[derive(Debug)]
pub(crate) struct Sublist<T> {
    root: Node<T>,
    len: usize,
}

#[derive(Debug)]
struct Node<T> {
    literal: HashMap<String, Node<T>>,
    star: Option<Box<Node<T>>>,
    /// Filters that end at this node.
    here: Vec<T>,
    /// Filters whose next (last) token is `>`.
    rest: Vec<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            literal: HashMap::default(),
            star: None,
            here: Vec::new(),
            rest: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.here.is_empty()
            && self.rest.is_empty()
            && self.star.is_none()
            && self.literal.is_empty()
    }
}

impl<T> Default for Sublist<T> {
    fn default() -> Self {
        Sublist {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<T> Sublist<T> {
    /// Entries stored.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds `entry` under `filter` (already validated).
    pub(crate) fn insert(&mut self, filter: &str, entry: T) {
        let mut node = &mut self.root;
        for token in filter.split('.') {
            node = match token {
                ">" => {
                    node.rest.push(entry);
                    self.len += 1;
                    return;
                }
                "*" => node.star.get_or_insert_with(Box::default),
                t => node.literal.entry(t.to_owned()).or_default(),
            };
        }
        node.here.push(entry);
        self.len += 1;
    }

    /// Removes the entries under `filter` for which `remove` says so, and
    /// the nodes left empty; returns how many it removed.
    pub(crate) fn remove(&mut self, filter: &str, mut remove: impl FnMut(&T) -> bool) -> usize {
        let n = remove_in(&mut self.root, Some(filter), &mut remove);
        self.len -= n;
        n
    }

    /// Calls `f` with every entry whose filter matches `subject` (a literal
    /// subject), in a fixed order for a given table.
    pub(crate) fn for_each_match<'a>(&'a self, subject: &str, f: &mut impl FnMut(&'a T)) {
        if self.len > 0 {
            match_in(&self.root, Some(subject), f);
        }
    }
}

/// The first token and the rest, if any.
fn split(tokens: &str) -> (&str, Option<&str>) {
    match tokens.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (tokens, None),
    }
}

fn match_in<'a, T>(node: &'a Node<T>, tokens: Option<&str>, f: &mut impl FnMut(&'a T)) {
    let Some(tokens) = tokens else {
        node.here.iter().for_each(&mut *f);
        return;
    };
    // `>` takes one or more tokens: there is at least one left.
    node.rest.iter().for_each(&mut *f);
    let (first, rest) = split(tokens);
    if let Some(next) = node.literal.get(first) {
        match_in(next, rest, f);
    }
    if let Some(next) = &node.star {
        match_in(next, rest, f);
    }
}

fn remove_in<T>(
    node: &mut Node<T>,
    tokens: Option<&str>,
    remove: &mut impl FnMut(&T) -> bool,
) -> usize {
    let Some(tokens) = tokens else {
        let before = node.here.len();
        node.here.retain(|e| !remove(e));
        return before - node.here.len();
    };
    let (first, rest) = split(tokens);
    match first {
        ">" => {
            let before = node.rest.len();
            node.rest.retain(|e| !remove(e));
            before - node.rest.len()
        }
        "*" => {
            let Some(next) = node.star.as_mut() else {
                return 0;
            };
            let n = remove_in(next, rest, remove);
            if next.is_empty() {
                node.star = None;
            }
            n
        }
        t => {
            let Some(next) = node.literal.get_mut(t) else {
                return 0;
            };
            let n = remove_in(next, rest, remove);
            if next.is_empty() {
                node.literal.remove(t);
            }
            n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use durabus_core::subject;
    use proptest::prelude::*;

    fn matches(list: &Sublist<(String, u32)>, subject: &str) -> Vec<u32> {
        let mut out = Vec::new();
        list.for_each_match(subject, &mut |(_, id)| out.push(*id));
        out.sort_unstable();
        out
    }

    #[test]
    fn wildcards_match_as_nats_defines_them() {
        let mut list = Sublist::default();
        for (id, f) in ["a.*", "a.>", "*.b", ">", "a.b", "a.*.c", "*.*"]
            .iter()
            .enumerate()
        {
            list.insert(f, (f.to_string(), id as u32));
        }
        assert_eq!(matches(&list, "a"), [3]);
        assert_eq!(matches(&list, "a.b"), [0, 1, 2, 3, 4, 6]);
        assert_eq!(matches(&list, "a.b.c"), [1, 3, 5]);
        assert_eq!(matches(&list, "x.b"), [2, 3, 6]);
        assert_eq!(matches(&list, "x.y.z"), [3]);
    }

    #[test]
    fn removing_prunes_what_it_leaves_empty() {
        let mut list = Sublist::default();
        list.insert("a.*.c", ("a.*.c".to_string(), 1));
        list.insert("a.*.c", ("a.*.c".to_string(), 2));
        list.insert("a.b.>", ("a.b.>".to_string(), 3));
        assert_eq!(list.remove("a.*.c", |(_, id)| *id == 1), 1);
        assert_eq!(list.remove("a.*.x", |_| true), 0);
        assert_eq!(matches(&list, "a.b.c"), [2, 3]);
        assert_eq!(list.remove("a.*.c", |_| true), 1);
        assert_eq!(list.remove("a.b.>", |_| true), 1);
        assert_eq!(list.len(), 0);
        assert!(list.root.is_empty(), "empty nodes stay behind");
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(str::to_owned)
    }

    fn filter() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop_oneof![token(), Just("*".to_owned())], 1..4),
            any::<bool>(),
        )
            .prop_map(|(mut t, full)| {
                if full {
                    t.push(">".to_owned());
                }
                t.join(".")
            })
    }

    proptest! {
        /// The trie yields exactly the filters `subject::matches` accepts,
        /// after any inserts and removals.
        #[test]
        fn matches_what_subject_matches_accepts(
            filters in prop::collection::vec(filter(), 0..24),
            removed in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            subjects in prop::collection::vec(prop::collection::vec(token(), 1..6), 1..12),
        ) {
            let mut list = Sublist::default();
            let mut live: Vec<(String, u32)> = Vec::new();
            for (id, f) in filters.iter().enumerate() {
                list.insert(f, (f.clone(), id as u32));
                live.push((f.clone(), id as u32));
            }
            for r in removed {
                if live.is_empty() {
                    break;
                }
                let (f, id) = live.remove(r.index(live.len()));
                prop_assert_eq!(list.remove(&f, |(_, i)| *i == id), 1);
            }
            prop_assert_eq!(list.len(), live.len());
            for s in subjects {
                let s = s.join(".");
                let mut want: Vec<u32> =
                    live.iter().filter(|(f, _)| subject::matches(f, &s)).map(|(_, id)| *id).collect();
                want.sort_unstable();
                prop_assert_eq!(matches(&list, &s), want, "subject {}", s);
            }
        }
    }
}
