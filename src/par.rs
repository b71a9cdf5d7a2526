//! Work over a long list on the machine's cores, side by side: the readers'
//! parse of a big state and the views built from it.

/// `f` of each item, in the list's order, on up to as many threads as the
/// machine has cores (8 at most), the first part on this thread; on this
/// thread alone below `serial_below` items. The first error stops nothing
/// else but is the answer (the one of the earliest part that failed).
pub(crate) fn try_map<T, U, E>(
    items: &[T],
    serial_below: usize,
    f: impl Fn(&T) -> Result<U, E> + Sync,
) -> Result<Vec<U>, E>
where
    T: Sync,
    U: Send,
    E: Send,
{
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    let run = |part: &[T], into: &mut Vec<U>| -> Result<(), E> {
        for item in part {
            into.push(f(item)?);
        }
        Ok(())
    };
    let mut all = Vec::with_capacity(items.len());
    if items.len() < serial_below.max(2) || threads < 2 {
        run(items, &mut all)?;
        return Ok(all);
    }
    let chunk = items.len().div_ceil(threads);
    let mut parts = items.chunks(chunk);
    let mine = parts.next().unwrap_or_default();
    let (first, others) = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .map(|part| {
                let run = &run;
                s.spawn(move || {
                    let mut v = Vec::with_capacity(part.len());
                    run(part, &mut v).map(|_| v)
                })
            })
            .collect();
        // The whole list is built here: the other parts are appended to
        // it, not the whole copied again.
        let first = run(mine, &mut all);
        let others: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        (first, others)
    });
    first?;
    for part in others {
        all.append(&mut part?);
    }
    Ok(all)
}

/// [`try_map`] of a function that cannot fail.
pub(crate) fn map<T, U>(items: &[T], serial_below: usize, f: impl Fn(&T) -> U + Sync) -> Vec<U>
where
    T: Sync,
    U: Send,
{
    match try_map(items, serial_below, |t| {
        Ok::<_, std::convert::Infallible>(f(t))
    }) {
        Ok(v) => v,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_order_and_says_the_first_error() {
        let items: Vec<u32> = (0..10_000).collect();
        assert_eq!(
            map(&items, 100, |i| i * 2),
            (0..10_000).map(|i| i * 2).collect::<Vec<_>>()
        );
        assert_eq!(map(&items[..3], 100, |i| i + 1), vec![1, 2, 3]);
        let err = try_map(
            &items,
            100,
            |&i| if i % 4000 == 3999 { Err(i) } else { Ok(i) },
        );
        assert_eq!(err, Err(3999));
        assert!(map(&[] as &[u32], 0, |i| *i).is_empty());
    }
}
