//! vmfs-fsck library; filled by its issue.
