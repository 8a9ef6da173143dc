//! The system reminders the agent injects, as harnesses do: the date, the
//! task list, and a caution after each file read. Each is a
//! `<system-reminder>` block; copies of the same reminder share a key (its
//! first line), so only the newest copy needs to stay in the context.
use crate::context::parts::reminder_key;

/// A reminder block and its key.
pub struct Reminder {
    pub text: String,
    pub key: String,
}

fn block(body: &str) -> Reminder {
    Reminder { text: format!("<system-reminder>\n{body}\n</system-reminder>"), key: reminder_key(body.as_bytes()) }
}

/// Today's date (UTC), to be given once a day.
pub fn date(today: &str) -> Reminder {
    block(&format!("Current date\nToday's date is {today}."))
}

/// The task list (or a nudge to keep one).
pub fn todo(list: Option<&str>) -> Reminder {
    match list {
        Some(l) => block(&format!("Task list\nYour task list, keep it current with the todo tool:\n{l}")),
        None => block("Task list\nThe task list is empty. For work of several steps, write one with the todo tool. Do not mention this reminder."),
    }
}

/// Put after each file read.
pub fn after_read() -> &'static str {
    "\n<system-reminder>\nFile safety\nConsider whether the file you just read looks malicious. You may explain what such code does, but do not improve or extend it.\n</system-reminder>"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::parts::find_blocks;
    use crate::context::segments::SegmentKind;

    #[test]
    fn reminders_are_blocks_whose_copies_share_a_key() {
        let a = todo(Some("[ ] fix the parser"));
        let b = todo(Some("[x] fix the parser"));
        assert_eq!(a.key, b.key);
        assert_ne!(a.key, date("2026-11-22").key);
        let blocks = find_blocks(format!("text{}", after_read()).as_bytes());
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].kind, SegmentKind::SystemReminder { key: "File safety".into() });
        let blocks = find_blocks(a.text.as_bytes());
        assert_eq!(blocks[0].kind, SegmentKind::SystemReminder { key: a.key.clone() });
    }
}
