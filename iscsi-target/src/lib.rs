//! See README.md; filled by its issue.
