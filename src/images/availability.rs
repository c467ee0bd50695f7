//! Whether an image can back instances now, and if not, in which way: a catalog image
//! that was never pulled is an ordinary state that a pull fixes, while a vanished
//! imported file or a failed pull needs someone's attention.

use super::pull::{PullProgress, PullState};
use crate::db::images::ImageRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Available,
    /// A catalog image whose file is not in images/ (never pulled, or deleted).
    NotDownloaded,
    /// A catalog image with a pull in progress.
    Downloading,
    /// A catalog image whose last pull failed (unreachable mirror, checksum mismatch).
    PullFailed,
    /// An imported image whose file is gone.
    MissingFile,
    /// Recorded for an architecture this host does not run.
    OtherArchitecture,
}

/// What is known of an image when its availability is decided.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    pub file_present: bool,
    pub in_catalog: bool,
    pub host_architecture: bool,
    pub pull: Option<PullState>,
}

impl Availability {
    pub fn assess(facts: Facts) -> Self {
        if facts.file_present {
            return Availability::Available;
        }
        if !facts.host_architecture {
            return Availability::OtherArchitecture;
        }
        if !facts.in_catalog {
            return Availability::MissingFile;
        }
        match facts.pull {
            Some(PullState::Downloading | PullState::Verifying) => Availability::Downloading,
            Some(PullState::Failed) => Availability::PullFailed,
            Some(PullState::Done) | None => Availability::NotDownloaded,
        }
    }

    /// The name clients match on.
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Available => "available",
            Availability::NotDownloaded => "not-downloaded",
            Availability::Downloading => "downloading",
            Availability::PullFailed => "pull-failed",
            Availability::MissingFile => "missing-file",
            Availability::OtherArchitecture => "other-architecture",
        }
    }

    /// Why an image cannot back instances, and how to fix it; None when it can.
    pub fn reason(self, row: &ImageRow, pull: Option<&PullProgress>, host_architecture: &str) -> Option<String> {
        let (name, id) = (&row.name, &row.id);
        match self {
            Availability::Available => None,
            Availability::NotDownloaded => Some(format!(
                "image {name} is not downloaded: run `ec2local images pull {name}` or POST /api/images/{id}/pull"
            )),
            Availability::Downloading => {
                Some(format!("image {name} is being downloaded: GET /api/images/{id} shows the progress"))
            }
            Availability::PullFailed => Some(format!(
                "the pull of image {name} failed: {}; pull it again with `ec2local images pull {name}` or POST /api/images/{id}/pull",
                pull.and_then(|p| p.error.as_deref()).unwrap_or("unknown error")
            )),
            Availability::MissingFile => Some(format!("the file of image {name} is missing: {}", row.file_path)),
            Availability::OtherArchitecture => {
                Some(format!("image {name} is for {}, this host is {host_architecture}", row.architecture))
            }
        }
    }

    /// Whether something went wrong, worth a warning; an image that only waits for a pull
    /// (or is being pulled) is not.
    pub fn is_problem(self) -> bool {
        matches!(self, Availability::PullFailed | Availability::MissingFile | Availability::OtherArchitecture)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog_image(file_present: bool, pull: Option<PullState>) -> Facts {
        Facts { file_present, in_catalog: true, host_architecture: true, pull }
    }

    #[test]
    fn a_catalog_image_without_its_file_waits_for_a_pull_without_a_problem() {
        for (pull, expected) in [
            (None, Availability::NotDownloaded),
            (Some(PullState::Done), Availability::NotDownloaded),
            (Some(PullState::Downloading), Availability::Downloading),
            (Some(PullState::Verifying), Availability::Downloading),
        ] {
            let availability = Availability::assess(catalog_image(false, pull));
            assert_eq!(availability, expected, "{pull:?}");
            assert!(!availability.is_problem(), "{pull:?}");
        }
    }

    #[test]
    fn a_present_file_is_available_whatever_a_pull_says() {
        for pull in [None, Some(PullState::Downloading), Some(PullState::Failed)] {
            assert_eq!(Availability::assess(catalog_image(true, pull)), Availability::Available);
        }
        assert!(!Availability::Available.is_problem());
    }

    #[test]
    fn failures_and_lost_files_are_problems() {
        let failed = Availability::assess(catalog_image(false, Some(PullState::Failed)));
        assert_eq!(failed, Availability::PullFailed);
        let imported = Facts { file_present: false, in_catalog: false, host_architecture: true, pull: None };
        assert_eq!(Availability::assess(imported), Availability::MissingFile);
        let foreign = Facts { host_architecture: false, ..imported };
        assert_eq!(Availability::assess(foreign), Availability::OtherArchitecture);
        for availability in [failed, Availability::MissingFile, Availability::OtherArchitecture] {
            assert!(availability.is_problem(), "{availability:?}");
        }
    }

    #[test]
    fn names_are_kebab_case_and_distinct() {
        let all = [
            Availability::Available,
            Availability::NotDownloaded,
            Availability::Downloading,
            Availability::PullFailed,
            Availability::MissingFile,
            Availability::OtherArchitecture,
        ];
        let names: std::collections::HashSet<&str> = all.iter().map(|a| a.as_str()).collect();
        assert_eq!(names.len(), all.len());
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '-')), "{names:?}");
    }
}
