//! The oracle of the timer store's parser (fuzz target `timer_store`).

use acrnd::timers;

/// The timer store's parser.
///
/// Input: the store file's bytes (read as the daemon reads them, invalid UTF-8 replaced).
/// Every timer kept has a valid name and a time in `1..=i64::MAX`; bad lines are reported
/// once each, in order, with their line numbers; what is kept renders to a store that
/// parses back to the same timers with no bad line.
pub fn timer_store(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (kept, bad) = timers::parse(&text);
    let lines = text.lines().count();
    assert!(kept.len() + bad.len() <= lines, "more results than lines");
    for w in bad.windows(2) {
        assert!(w[0].line < w[1].line, "bad lines in order, once each");
    }
    assert!(bad.iter().all(|b| (1..=lines).contains(&b.line)), "{bad:?}");
    for (name, &when) in &kept {
        assert!(
            !name.is_empty() && name.len() <= timers::MAX_NAME && timers::valid_name(name),
            "kept a bad name {name:?}"
        );
        assert!(when >= 1 && i64::try_from(when).is_ok(), "kept time {when}");
        assert!(text.contains(name.as_str()), "{name:?} came from the text");
    }
    let rendered = timers::render(&kept);
    assert_eq!(
        timers::parse(&rendered),
        (kept.clone(), vec![]),
        "{rendered:?}"
    );
    assert_eq!(
        timers::nearest(&kept).map(|(_, t)| t),
        kept.values().copied().min(),
        "nearest"
    );
}
