//! SIGPIPE stories of exited processes, kept bounded: each is counted under its fate, and only
//! the [`TOP_SIGPIPE_STORIES`] largest (by count) are kept whole for the summary. A node with a
//! thousand `cmd | head` pipelines a second would otherwise keep a story per process for ever.

use crate::report::record::{Fate, SigpipeFates, SigpipeReport, TOP_SIGPIPE_STORIES};

/// Finished stories: counted per fate, the largest kept.
#[derive(Debug, Default)]
pub struct FinishedStories {
    counts: SigpipeFates,
    /// The largest, largest first.
    top: Vec<SigpipeReport>,
}

impl FinishedStories {
    /// Counts a story (told, with its final count) whose process exited.
    pub fn finish(&mut self, story: SigpipeReport) {
        self.counts.stories += 1;
        *self
            .counts
            .fates
            .entry(fate_name(story.fate).to_owned())
            .or_insert(0) += 1;
        let place = self
            .top
            .iter()
            .position(|kept| kept.count < story.count)
            .unwrap_or(self.top.len());
        if place < TOP_SIGPIPE_STORIES {
            self.top.insert(place, story);
        } else {
            self.counts.left_out += 1;
        }
        if self.top.len() > TOP_SIGPIPE_STORIES {
            self.top.truncate(TOP_SIGPIPE_STORIES);
            self.counts.left_out += 1;
        }
    }

    /// The counts per fate, with the live stories (`live`, told) added.
    pub fn fates(&self, live: &[SigpipeReport]) -> SigpipeFates {
        let mut counts = self.counts.clone();
        for story in live {
            counts.stories += 1;
            *counts
                .fates
                .entry(fate_name(story.fate).to_owned())
                .or_insert(0) += 1;
        }
        counts
    }

    /// The largest finished stories.
    pub fn top(&self) -> &[SigpipeReport] {
        &self.top
    }
}

fn fate_name(fate: Fate) -> &'static str {
    match fate {
        Fate::Killed => "killed",
        Fate::Ignored => "ignored",
        Fate::Handled => "handled",
        Fate::Blocked => "blocked",
        Fate::Pending => "pending",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::record::samples;

    #[test]
    fn only_the_largest_stories_are_kept_and_every_one_is_counted() {
        let mut finished = FinishedStories::default();
        for count in 0..(TOP_SIGPIPE_STORIES as u64 + 5) {
            let mut story = samples::sigpipe();
            story.count = count;
            story.fate = if count % 2 == 0 {
                Fate::Ignored
            } else {
                Fate::Killed
            };
            finished.finish(story);
        }
        assert_eq!(finished.top().len(), TOP_SIGPIPE_STORIES);
        assert_eq!(
            finished.top()[0].count,
            TOP_SIGPIPE_STORIES as u64 + 4,
            "largest first"
        );
        let fates = finished.fates(&[]);
        assert_eq!(fates.stories, TOP_SIGPIPE_STORIES as u64 + 5);
        assert_eq!(fates.left_out, 5);
        assert_eq!(
            fates.fates["ignored"] + fates.fates["killed"],
            fates.stories
        );
    }
}
