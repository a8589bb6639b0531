//! The (stream, knote) pairs watching one pid. Almost every pid is watched by one stream, so
//! one pair is kept inline (16 bytes in all) and only more than one goes to the heap.

#[derive(Clone, Debug)]
pub(crate) enum Links {
    One(u32, u32),
    #[allow(clippy::box_collection)] // a thin pointer keeps the inline case at 16 bytes
    Many(Box<Vec<(u32, u32)>>),
}

impl Links {
    pub(crate) fn new() -> Links {
        Links::Many(Box::default())
    }

    pub(crate) fn push(&mut self, stream: u32, knote: u32) {
        match self {
            Links::Many(v) if v.is_empty() => *self = Links::One(stream, knote),
            Links::Many(v) => v.push((stream, knote)),
            Links::One(s, k) => *self = Links::Many(Box::new(vec![(*s, *k), (stream, knote)])),
        }
    }

    /// Drops the pair of `stream`; returns whether none is left.
    pub(crate) fn remove_stream(&mut self, stream: u32) -> bool {
        match self {
            Links::One(s, _) if *s == stream => *self = Links::new(),
            Links::One(..) => {}
            Links::Many(v) => v.retain(|&(s, _)| s != stream),
        }
        self.is_empty()
    }

    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Links::Many(v) if v.is_empty())
    }

    pub(crate) fn has_stream(&self, stream: u32) -> bool {
        self.iter().any(|(s, _)| s == stream)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let (one, many) = match self {
            Links::One(s, k) => (Some((*s, *k)), &[][..]),
            Links::Many(v) => (None, &v[..]),
        };
        one.into_iter().chain(many.iter().copied())
    }
}

impl IntoIterator for Links {
    type Item = (u32, u32);
    type IntoIter =
        std::iter::Chain<std::option::IntoIter<(u32, u32)>, std::vec::IntoIter<(u32, u32)>>;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Links::One(s, k) => Some((s, k)).into_iter().chain(Vec::new()),
            Links::Many(v) => None.into_iter().chain(*v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Links;

    #[test]
    fn grows_and_shrinks() {
        let mut l = Links::new();
        assert!(l.is_empty());
        l.push(1, 10);
        assert!(matches!(l, Links::One(1, 10)));
        l.push(2, 20);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![(1, 10), (2, 20)]);
        assert!(l.has_stream(2));
        assert!(!l.remove_stream(1));
        assert!(l.remove_stream(2));
        let mut one = Links::new();
        one.push(3, 30);
        assert!(!one.remove_stream(4));
        assert!(one.remove_stream(3));
        assert_eq!(std::mem::size_of::<Links>(), 16);
    }
}
