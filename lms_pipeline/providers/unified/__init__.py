"""The Unified.to LMS API (docs/providers.md §1, §9.4): offset pages of bare arrays, read with keyset paging or
repeated passes so a listing that changes while it is paged is read whole; contents, activities and grades too."""
