//! Sets of integers kept as sorted, disjoint, non-adjacent inclusive ranges:
//! the normal form behind [`AddrSet`](crate::AddrSet) and
//! [`PortSet`](crate::PortSet). Two sets hold the same values exactly when
//! their range lists are equal. Nothing here can panic.

/// An unsigned integer type a [`Ranges`] can hold.
pub(crate) trait Point: Copy + Ord + std::fmt::Debug {
    /// The smallest value.
    const MIN: Self;
    /// The largest value.
    const MAX: Self;
    /// The next value, if there is one.
    fn succ(self) -> Option<Self>;
    /// The previous value, if there is one.
    fn pred(self) -> Option<Self>;
}

macro_rules! point {
    ($($t:ty),*) => {$(
        impl Point for $t {
            const MIN: Self = <$t>::MIN;
            const MAX: Self = <$t>::MAX;
            fn succ(self) -> Option<Self> {
                self.checked_add(1)
            }
            fn pred(self) -> Option<Self> {
                self.checked_sub(1)
            }
        }
    )*};
}
point!(u16, u32, u128);

/// A set of values: sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Ranges<T: Point>(Vec<(T, T)>);

impl<T: Point> Ranges<T> {
    /// No value.
    pub(crate) fn empty() -> Self {
        Ranges(Vec::new())
    }

    /// Every value.
    pub(crate) fn full() -> Self {
        Ranges(vec![(T::MIN, T::MAX)])
    }

    /// The values `lo..=hi` (empty when `lo > hi`).
    pub(crate) fn span(lo: T, hi: T) -> Self {
        if lo > hi {
            Self::empty()
        } else {
            Ranges(vec![(lo, hi)])
        }
    }

    /// The ranges, in increasing order.
    pub(crate) fn ranges(&self) -> &[(T, T)] {
        &self.0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.0 == [(T::MIN, T::MAX)]
    }

    pub(crate) fn contains(&self, x: T) -> bool {
        // The first range whose upper end is not below `x` is the only
        // candidate.
        let i = self.0.partition_point(|&(_, hi)| hi < x);
        self.0.get(i).is_some_and(|&(lo, _)| lo <= x)
    }

    /// Values in `self` or in `other`.
    pub(crate) fn union(&self, other: &Self) -> Self {
        let mut all: Vec<(T, T)> = self.0.iter().chain(&other.0).copied().collect();
        all.sort_unstable();
        let mut out: Vec<(T, T)> = Vec::with_capacity(all.len());
        for (lo, hi) in all {
            if let Some(last) = out.last_mut() {
                // Overlapping or adjacent: merge.
                if last.1.succ().is_none_or(|next| lo <= next) {
                    last.1 = last.1.max(hi);
                    continue;
                }
            }
            out.push((lo, hi));
        }
        Ranges(out)
    }

    /// Values in `self` and not in `other`.
    pub(crate) fn subtract(&self, other: &Self) -> Self {
        let cut = &other.0;
        let mut out = Vec::new();
        let mut j = 0;
        for &(lo, hi) in &self.0 {
            while cut.get(j).is_some_and(|&(_, chi)| chi < lo) {
                j += 1;
            }
            let mut lo = lo;
            let mut alive = true;
            let mut k = j;
            while let Some(&(clo, chi)) = cut.get(k) {
                if clo > hi {
                    break;
                }
                if clo > lo {
                    if let Some(before) = clo.pred() {
                        out.push((lo, before));
                    }
                }
                match chi.succ() {
                    Some(next) if chi < hi => lo = next,
                    _ => {
                        alive = false;
                        break;
                    }
                }
                k += 1;
            }
            if alive {
                out.push((lo, hi));
            }
        }
        Ranges(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(v: &[(u16, u16)]) -> Ranges<u16> {
        v.iter().fold(Ranges::empty(), |acc, &(a, b)| {
            acc.union(&Ranges::span(a, b))
        })
    }

    #[test]
    fn union_merges_overlapping_and_adjacent_ranges() {
        assert_eq!(r(&[(1, 5), (6, 9)]).ranges(), &[(1, 9)]);
        assert_eq!(r(&[(1, 5), (3, 4)]).ranges(), &[(1, 5)]);
        assert_eq!(r(&[(7, 9), (1, 2)]).ranges(), &[(1, 2), (7, 9)]);
        assert_eq!(r(&[(0, 10), (11, 65535)]), Ranges::full());
    }

    #[test]
    fn subtract_cuts_holes_and_ends() {
        let full = Ranges::<u16>::full();
        assert_eq!(
            full.subtract(&r(&[(80, 80)])).ranges(),
            &[(0, 79), (81, 65535)]
        );
        assert_eq!(
            full.subtract(&r(&[(0, 0), (65535, 65535)])).ranges(),
            &[(1, 65534)]
        );
        assert!(full.subtract(&full).is_empty());
        assert_eq!(
            r(&[(1, 10), (20, 30)]).subtract(&r(&[(5, 25)])).ranges(),
            &[(1, 4), (26, 30)]
        );
        assert_eq!(r(&[(1, 10)]).subtract(&r(&[(11, 20)])).ranges(), &[(1, 10)]);
    }

    #[test]
    fn contains_finds_values_at_range_ends_only_inside() {
        let s = r(&[(10, 20), (30, 30)]);
        for (x, want) in [
            (9, false),
            (10, true),
            (20, true),
            (21, false),
            (30, true),
            (31, false),
        ] {
            assert_eq!(s.contains(x), want, "{x}");
        }
        assert!(!Ranges::<u16>::empty().contains(0));
    }
}
