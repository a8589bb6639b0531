//! A minimal slab: stable `u32` slots with a free list, so knotes and streams are named by
//! small integers instead of pointers.

pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Option<u32>,
    len: usize,
}

enum Slot<T> {
    Full(T),
    Free(Option<u32>),
}

impl<T> Slab<T> {
    pub(crate) const fn new() -> Slab<T> {
        Slab {
            slots: Vec::new(),
            free: None,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn insert(&mut self, value: T) -> u32 {
        self.len += 1;
        match self.free {
            Some(idx) => {
                let slot = &mut self.slots[idx as usize];
                match *slot {
                    Slot::Free(next) => self.free = next,
                    Slot::Full(_) => unreachable!("free list points at a full slot"),
                }
                *slot = Slot::Full(value);
                idx
            }
            None => {
                let idx =
                    u32::try_from(self.slots.len()).expect("slab holds at most u32::MAX slots");
                self.slots.push(Slot::Full(value));
                idx
            }
        }
    }

    pub(crate) fn get(&self, idx: u32) -> Option<&T> {
        match self.slots.get(idx as usize) {
            Some(Slot::Full(v)) => Some(v),
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, idx: u32) -> Option<&mut T> {
        match self.slots.get_mut(idx as usize) {
            Some(Slot::Full(v)) => Some(v),
            _ => None,
        }
    }

    pub(crate) fn remove(&mut self, idx: u32) -> Option<T> {
        let slot = self.slots.get_mut(idx as usize)?;
        if let Slot::Free(_) = slot {
            return None;
        }
        let old = std::mem::replace(slot, Slot::Free(self.free));
        self.free = Some(idx);
        self.len -= 1;
        match old {
            Slot::Full(v) => Some(v),
            Slot::Free(_) => unreachable!(),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| match s {
            Slot::Full(v) => Some((i as u32, v)),
            Slot::Free(_) => None,
        })
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut T)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Slot::Full(v) => Some((i as u32, v)),
                Slot::Free(_) => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::Slab;

    #[test]
    fn reuses_freed_slots() {
        let mut s = Slab::new();
        let a = s.insert("a");
        let b = s.insert("b");
        assert_eq!(s.len(), 2);
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None);
        let c = s.insert("c");
        assert_eq!(c, a);
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.iter().count(), 2);
        assert_eq!(s.len(), 2);
    }
}
